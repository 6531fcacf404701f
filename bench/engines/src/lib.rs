//! Shared inputs of the engine and driver benchmarks.

/// The benchmark's chat prompt: about `size` bytes of ordinary business prose with one e-mail
/// address and one phone number (the same mix as `bench/run.py`'s bodies), no injection.
pub fn chat_prompt(size: usize) -> String {
    const PARAS: [&str; 4] = [
        "Our quarterly report covers revenue, operating costs and the outlook for the next fiscal year. \
         Please summarise the main drivers of growth and list the risks the board highlighted. ",
        "The logistics team moved the Rotterdam shipments to the new warehouse in March, which cut \
         delivery times by two days on average; customers in Belgium noticed first. ",
        "Suggest three questions an analyst might ask on the earnings call, and draft a short, \
         friendly reply to the supplier who asked about the delayed invoice. ",
        "Keep the tone neutral, avoid jargon, and use bullet points where it helps the reader. ",
    ];
    let mut s =
        String::from("Hi, I am Dana from finance (dana.weber@example.com, +1 415 555 0134). ");
    let mut i = 0;
    while s.len() < size {
        s.push_str(PARAS.get(i % PARAS.len()).copied().unwrap_or_default());
        i += 1;
    }
    let mut cut = size.min(s.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s
}
