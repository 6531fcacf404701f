//! Our own benign training text for prompt-guard's model: ordinary instruction-following
//! requests (code, writing, data, maths, everyday questions), generated deterministically from
//! templates written for this project (no third-party text).
//!
//! Why: the licence-clean (`ship_ok`) part of the labelled data has almost no benign coding or
//! writing requests, so a model trained on it alone learns that imperative verbs ("write",
//! "create", "ignore case") and code punctuation mean "attack". These records teach it
//! otherwise. They include the words attacks also use ("instructions", "ignore", "system",
//! "rules", "act as") in their everyday, harmless senses.

const OPENERS: &[&str] = &[
    "",
    "Please ",
    "Can you ",
    "Could you ",
    "I need you to ",
    "Help me ",
    "Quick question: ",
    "Hey, ",
];

const CODE_TASKS: &[&str] = &[
    "write a Python function that reverses a string",
    "write a SQL query that returns the top 5 customers by total order value",
    "implement a JavaScript debounce function",
    "write a regular expression that matches a US zip code",
    "write a bash script that backs up my home directory to /mnt/backup every night",
    "create a Java class for a bank account with deposit and withdraw methods",
    "write a C program that prints the first 100 prime numbers",
    "create an HTML form with name, email and message fields",
    "write CSS to center a div horizontally and vertically",
    "write a unit test for a function that adds two numbers",
    "create a REST endpoint in Flask that returns the current time as JSON",
    "write a function that merges two sorted lists into one sorted list",
    "define a Rust struct for a 2D point with a distance method",
    "write a minimal HTTP server in Go",
    "create a React component that shows a counter with plus and minus buttons",
    "write code to read a CSV file and print the average of the second column",
    "refactor this function to remove the duplicated loop",
    "fix the bug in this code: def add(a, b): return a - b",
    "explain what this code does: for i in range(10): print(i * i)",
    "convert this Python 2 print statement to Python 3: print \"hello\"",
    "write a Dockerfile for a Node.js application",
    "write a GitHub Actions workflow that runs the tests on every push",
    "create a Kubernetes deployment with three replicas of nginx",
    "write a function to validate an email address",
    "sort this list of dictionaries by the key 'age'",
    "write a recursive function to compute the factorial of n",
    "implement binary search in TypeScript",
    "write a Python script that renames all .txt files in a folder to .md",
    "write a SQL statement to delete duplicate rows from the users table",
    "create a linked list class with insert and delete methods",
    "write a function that checks whether a string is a palindrome, ignoring case and spaces",
    "generate a random password of 16 characters in Python",
    "write a shell command that counts the lines in all .rs files",
    "explain the difference between a process and a thread",
    "show me how to set an environment variable in Windows PowerShell",
    "write a function that returns the nth Fibonacci number using memoization",
    "parse this JSON in JavaScript and print the name field",
    "write a Makefile with build, test and clean targets",
    "optimize this SQL query that uses a subquery in the WHERE clause",
    "write a Python class that caches the results of an expensive call",
];

const WRITING_TASKS: &[&str] = &[
    "write an email to my manager asking for Friday off",
    "write a short poem about autumn leaves",
    "write a product description for a ceramic coffee mug",
    "draft a cover letter for a junior marketing role",
    "summarize the following paragraph in two sentences",
    "write a tweet announcing our new mobile app",
    "give me three title ideas for a blog post about balcony gardening",
    "rewrite this sentence to sound more formal: we can't make it tomorrow",
    "translate 'where is the train station' into French, Spanish and German",
    "write a thank-you note to a colleague who helped me move",
    "create a weekly meal plan for a vegetarian family of four",
    "write the opening paragraph of a mystery story set in Venice",
    "write step-by-step instructions for changing a bicycle tyre",
    "rewrite these assembly instructions so a beginner can follow them",
    "list five interview questions for a data analyst position",
    "write a friendly reminder to the team about Monday's deadline",
    "draft the rules for a neighbourhood book club",
    "write a short speech for my sister's wedding",
    "act as a travel guide and suggest a two-day itinerary for Lisbon",
    "act as a math tutor and explain fractions to a ten-year-old",
    "pretend you are a tour guide in ancient Rome and describe the Colosseum",
    "describe the system of government in Switzerland",
    "explain how the immune system fights a virus",
    "compare electric cars and hybrid cars in a table",
    "outline a presentation about renewable energy",
    "write a haiku about the sea",
    "proofread this paragraph and fix the grammar",
    "summarize the main points of the attached meeting notes",
    "turn these bullet points into a paragraph",
    "write a polite reply declining a meeting invitation",
];

const QUESTIONS: &[&str] = &[
    "what is the capital of Australia?",
    "how many grams are in a pound?",
    "what is the difference between weather and climate?",
    "how do I ignore a file in git?",
    "how do I reset my router to factory settings?",
    "what are the rules of chess castling?",
    "why is the sky blue?",
    "how do vaccines work?",
    "what does a system administrator do?",
    "how can I improve my sleep?",
    "what is compound interest and how is it calculated?",
    "how long should I boil an egg?",
    "what's a good stretching routine after running?",
    "how do I make my prompts clearer when I use a chatbot?",
    "what is a system prompt in large language models?",
    "how do I bypass the toll road on my route to Lyon?",
    "what happens if I forget my password for online banking?",
    "how should I store API keys safely in a web application?",
    "is it safe to ignore a check engine light for a day?",
    "what are the instructions for assembling an IKEA bed frame?",
];

const SUFFIXES: &[&str] = &[
    "",
    " Keep it under 100 words.",
    " Return the answer as JSON.",
    " Explain each step.",
    " Use simple language.",
    " Do not use any external libraries.",
    " Add comments to the code.",
    " Follow PEP 8.",
    " Give two alternatives.",
    " Ignore edge cases for now.",
    " Make it sound friendly.",
    " Answer in a numbered list.",
];

/// The generated texts, in a fixed order (the same on every run).
pub fn benign_requests() -> Vec<String> {
    let mut out = Vec::new();
    let groups: [&[&str]; 3] = [CODE_TASKS, WRITING_TASKS, QUESTIONS];
    for (g, tasks) in groups.iter().enumerate() {
        for (t, task) in tasks.iter().enumerate() {
            // A deterministic spread of openers and suffixes per task (not the full product).
            for k in 0..4 {
                let opener = OPENERS
                    .get((t * 3 + k * 5 + g) % OPENERS.len())
                    .copied()
                    .unwrap_or("");
                let suffix = SUFFIXES
                    .get((t * 7 + k * 11 + g * 3) % SUFFIXES.len())
                    .copied()
                    .unwrap_or("");
                let mut s = String::with_capacity(opener.len() + task.len() + suffix.len());
                s.push_str(opener);
                if opener.is_empty() {
                    let mut chars = task.chars();
                    if let Some(c) = chars.next() {
                        s.extend(c.to_uppercase());
                        s.push_str(chars.as_str());
                    }
                } else {
                    s.push_str(task);
                }
                s.push_str(suffix);
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn deterministic_and_varied() {
        let a = super::benign_requests();
        assert_eq!(a, super::benign_requests());
        assert!(a.len() > 300, "{}", a.len());
        assert!(a.iter().any(|s| s.starts_with("Please write a Python")));
    }
}
