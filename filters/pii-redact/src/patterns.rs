//! The built-in entity catalogue: one regex per candidate shape, the check that confirms it,
//! its base score and the context words that raise it. Every pattern of a policy (built-in,
//! operator-defined, dictionary terms, placeholders) compiles into one multi-pattern regex.
//!
//! Rules for patterns here: ASCII word boundaries (`(?-u:\b)`) only, so the lazy DFA never gives
//! up on non-ASCII text; generic shapes have bounded repeats, so a stream never holds an
//! unbounded run of text waiting for them to end; no `\` or `"` inside value classes, so a
//! replacement never cuts a JSON escape when tool arguments are scanned as raw JSON text.

use crate::validate;

/// An entity type: an index into the engine's type table. The built-in types come first, in
/// [`BUILTIN`] order; operator-defined types and dictionaries follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ty(pub u16);

pub const EMAIL: Ty = Ty(0);
pub const PHONE: Ty = Ty(1);
pub const CREDIT_CARD: Ty = Ty(2);
pub const IBAN: Ty = Ty(3);
pub const US_SSN: Ty = Ty(4);
pub const IP_ADDRESS: Ty = Ty(5);
pub const API_KEY: Ty = Ty(6);
pub const PRIVATE_KEY: Ty = Ty(7);
pub const PASSWORD: Ty = Ty(8);

/// Names of the built-in types, indexed by [`Ty`].
pub const BUILTIN: &[&str] = &[
    "EMAIL",
    "PHONE",
    "CREDIT_CARD",
    "IBAN",
    "US_SSN",
    "IP_ADDRESS",
    "API_KEY",
    "PRIVATE_KEY",
    "PASSWORD",
];

/// What confirms a candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Check {
    /// Nothing beyond the pattern (and the boundary rule of its type).
    None,
    Email,
    Phone,
    Card,
    Iban,
    Ssn,
    Ipv4,
    Ipv6,
    GithubToken,
    Jwt,
    /// A PEM `BEGIN ... PRIVATE KEY` line: the entity runs to the matching `END` line.
    Pem,
    /// A password value after a key word or in a URL: not a placeholder, not a plain word.
    Password,
    /// A password option (`-a`, `-p`, `--password`) on a database client's command line.
    CliPassword,
    /// A secret value after a key word: long enough, random enough.
    Secret,
    /// Operator checksum on the digits of the match.
    Luhn,
    Mod97,
    /// Dictionary term: must not sit inside a longer word.
    Term,
    /// A pseudonym placeholder (`<EMAIL_1>`), not an entity: found only to restore it.
    Placeholder,
}

/// One candidate shape.
#[derive(Debug, Clone)]
pub struct PatternDef {
    pub ty: Ty,
    /// regex-automata syntax.
    pub regex: String,
    /// The entity is capture group 1, not the whole match (key words before a value).
    pub group: bool,
    pub check: Check,
    /// Score when the check passes, before context.
    pub score: f32,
    /// Where a match can start (the scan tries patterns only there).
    pub anchor: Anchor,
}

/// Where matches of a pattern can start. The scan finds these places in one pass (one
/// aho-corasick automaton for every literal, one byte loop for the rest) and runs the patterns
/// anchored there: one unanchored DFA for all patterns would be many times slower.
#[derive(Debug, Clone, PartialEq)]
pub enum Anchor {
    /// At one of these literals (ASCII case-insensitive).
    Literals(Vec<String>),
    /// At a word start that is a digit, `+` or `(`; hex words followed by `:` (IPv6); two
    /// capitals and two digits (IBAN).
    Numeric,
    /// Before an `@`: the start of the local part.
    Email,
    /// Before `://`: the start of the scheme.
    Url,
    /// Operator regex: wherever it matches (an unanchored pass of the operator patterns).
    Custom,
    /// A type name, or the bracket before it.
    Placeholder,
}

fn lits(l: &[&str]) -> Anchor {
    Anchor::Literals(l.iter().map(|s| (*s).to_string()).collect())
}

fn def(ty: Ty, regex: &str, group: bool, check: Check, score: f32, anchor: Anchor) -> PatternDef {
    PatternDef {
        ty,
        regex: regex.to_string(),
        group,
        check,
        score,
        anchor,
    }
}

/// Literals the key-word pattern can start with.
const KEY_WORD_STARTS: &[&str] = &[
    "api",
    "x-api",
    "access",
    "auth",
    "refresh",
    "secret",
    "client",
    "app",
    "signing",
    "token",
    "private",
    "credential",
];

/// Literals the password pattern can start with.
const PASSWORD_WORD_STARTS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "passcode",
    "mot de passe",
    "contraseña",
    "passwort",
    "kennwort",
    "senha",
    "wachtwoord",
    "пароль",
    "Пароль",
    "ПАРОЛЬ",
    "密码",
    "パスワード",
    "비밀번호",
];

/// Score added when a context word of the type is near the match.
pub const CONTEXT_BOOST: f32 = 0.35;

/// The built-in patterns, in priority order (at one start position the first pattern wins; when
/// its check fails the others are tried at the same position).
pub fn builtin_patterns() -> Vec<PatternDef> {
    // Characters a secret value may hold (no quote, backslash, space).
    const SECRET_CHARS: &str = r"[A-Za-z0-9_\-+/=.~]";
    let key_words = r"(?i:api[_\-. ]?key|apikey|x-api-key|access[_\-]?token|auth[_\-]?token|refresh[_\-]?token|secret[_\-]?key|client[_\-]?secret|app[_\-]?secret|signing[_\-]?key|secret|token|private[_\-]?key|access[_\-]?key(?:[_\-]?id)?|credentials?|authorization)";
    vec![
        // Secrets with a fixed prefix first: their shape is certain.
        def(
            PRIVATE_KEY,
            r"-----BEGIN (?:[A-Z0-9]{1,10} ){0,3}PRIVATE KEY(?: BLOCK)?-----",
            false,
            Check::Pem,
            1.0,
            lits(&["-----BEGIN "]),
        ),
        def(
            API_KEY,
            r"sk-ant-(?:api|admin|sid)[0-9]{2}-[A-Za-z0-9_\-]{32,200}",
            false,
            Check::None,
            0.95,
            lits(&["sk-ant-"]),
        ),
        def(
            API_KEY,
            r"sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_\-]{20,200}",
            false,
            Check::Secret,
            0.9,
            lits(&["sk-"]),
        ),
        def(
            API_KEY,
            r"(?:ghp|gho|ghs|ghu|ghr)_[A-Za-z0-9]{36}",
            false,
            Check::GithubToken,
            0.97,
            lits(&["ghp_", "gho_", "ghs_", "ghu_", "ghr_"]),
        ),
        def(
            API_KEY,
            r"github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}",
            false,
            Check::None,
            0.97,
            lits(&["github_pat_"]),
        ),
        def(
            API_KEY,
            r"glpat-[A-Za-z0-9_\-]{20,64}",
            false,
            Check::Secret,
            0.95,
            lits(&["glpat-"]),
        ),
        def(
            API_KEY,
            r"xox[abposr]-[A-Za-z0-9\-]{10,200}",
            false,
            Check::Secret,
            0.95,
            lits(&["xox"]),
        ),
        def(
            API_KEY,
            r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,200}",
            false,
            Check::Secret,
            0.95,
            lits(&["sk_live_", "sk_test_", "rk_live_", "rk_test_"]),
        ),
        def(
            API_KEY,
            r"AIza[0-9A-Za-z_\-]{35}",
            false,
            Check::None,
            0.95,
            lits(&["AIza"]),
        ),
        def(
            API_KEY,
            r"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}",
            false,
            Check::None,
            0.95,
            lits(&["AKIA", "ASIA", "ABIA", "ACCA", "A3T"]),
        ),
        def(
            API_KEY,
            r"SG\.[A-Za-z0-9_\-]{16,32}\.[A-Za-z0-9_\-]{16,64}",
            false,
            Check::None,
            0.95,
            lits(&["SG."]),
        ),
        def(
            API_KEY,
            r"npm_[A-Za-z0-9]{36}",
            false,
            Check::None,
            0.95,
            lits(&["npm_"]),
        ),
        def(
            API_KEY,
            r"hf_[A-Za-z0-9]{30,40}",
            false,
            Check::Secret,
            0.95,
            lits(&["hf_"]),
        ),
        def(
            API_KEY,
            r"key-[0-9a-f]{32}",
            false,
            Check::None,
            0.9,
            lits(&["key-"]),
        ),
        def(
            API_KEY,
            r"eyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*",
            false,
            Check::Jwt,
            0.9,
            lits(&["eyJ"]),
        ),
        def(
            API_KEY,
            r"(?i:AccountKey|SharedAccessKey)=([A-Za-z0-9+/]{40,100}={0,2})",
            true,
            Check::None,
            0.95,
            lits(&["AccountKey=", "SharedAccessKey="]),
        ),
        def(
            API_KEY,
            r#"(?i:aws[_\-]?secret[_\-]?access[_\-]?key|aws[_\-]?secret[_\-]?key|secret[_\-]?access[_\-]?key)["']?\s{0,3}(?:[:=]|=>)\s{0,3}["']?([A-Za-z0-9/+=]{40})"#,
            true,
            Check::None,
            0.95,
            lits(&["aws", "secret"]),
        ),
        // Values after a key word.
        def(
            API_KEY,
            &format!(r#"(?i:bearer)\s{{1,3}}({SECRET_CHARS}{{16,512}})"#),
            true,
            Check::Secret,
            0.85,
            lits(&["bearer"]),
        ),
        def(
            API_KEY,
            &format!(
                r#"{key_words}["']?\s{{0,3}}(?:[:=]|=>|\s(?:is|was|ist|est|es|è))\s{{0,3}}["']?({SECRET_CHARS}{{16,512}})"#
            ),
            true,
            Check::Secret,
            0.8,
            lits(KEY_WORD_STARTS),
        ),
        def(
            PASSWORD,
            r#"(?i:password|passwd|pwd|passphrase|passcode|mot de passe|contraseña|passwort|kennwort|senha|wachtwoord|пароль|密码|パスワード|비밀번호)["']?\s{0,3}(?:[:=]|=>|\s(?:is|was|ist|war|est|es|era|è|é|:))\s{0,3}["']?([^\s"'\\,;<>`]{4,64})"#,
            true,
            Check::Password,
            0.85,
            lits(PASSWORD_WORD_STARTS),
        ),
        def(
            PASSWORD,
            r"[A-Za-z][A-Za-z0-9+.\-]{1,20}://[^\s:/@\x22'\\]{1,64}:([^\s@/\x22'\\]{1,128})@",
            true,
            Check::Password,
            0.9,
            Anchor::Url,
        ),
        def(
            PASSWORD,
            r"(?:-a|-p|--password[= ]|--pass[= ])[ ]?([^\s\x22'\\]{4,64})",
            true,
            Check::CliPassword,
            0.85,
            lits(&["-a", "-p", "--pass"]),
        ),
        // Checksummed numbers.
        def(
            IBAN,
            r"(?-u:\b)[A-Za-z]{2}[0-9]{2}(?:[ ]?[A-Za-z0-9]{4}){2,7}(?:[ ]?[A-Za-z0-9]{1,4})?",
            false,
            Check::Iban,
            0.95,
            Anchor::Numeric,
        ),
        def(
            CREDIT_CARD,
            r"(?-u:\b)[0-9](?:[ \-]?[0-9]){11,18}(?-u:\b)",
            false,
            Check::Card,
            0.95,
            Anchor::Numeric,
        ),
        def(
            US_SSN,
            r"(?-u:\b)[0-9]{3}(?:-[0-9]{2}-|[ ][0-9]{2}[ ]|[0-9]{2})[0-9]{4}(?-u:\b)",
            false,
            Check::Ssn,
            0.7,
            Anchor::Numeric,
        ),
        def(
            IP_ADDRESS,
            r"(?-u:\b)(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?-u:\b)",
            false,
            Check::Ipv4,
            0.85,
            Anchor::Numeric,
        ),
        def(
            IP_ADDRESS,
            r"(?:[0-9A-Fa-f]{1,4}:|::)(?:[0-9A-Fa-f]{0,4}:){1,7}[0-9A-Fa-f]{0,4}(?:%[0-9A-Za-z]{1,16})?",
            false,
            Check::Ipv6,
            0.85,
            Anchor::Numeric,
        ),
        def(
            EMAIL,
            r"[A-Za-z0-9_%+\-\u00C0-\u024F][A-Za-z0-9._%+\-\u00C0-\u024F]{0,63}@(?:[A-Za-z0-9\-\u00C0-\u024F]{1,63}\.){1,6}[A-Za-z]{2,24}",
            false,
            Check::Email,
            0.9,
            Anchor::Email,
        ),
        def(
            PHONE,
            validate::PHONE_PATTERN,
            false,
            Check::Phone,
            0.75,
            Anchor::Numeric,
        ),
    ]
}

/// Context words per built-in type (lower case; matched case-insensitively near a candidate).
pub fn context_words(ty: Ty) -> &'static [&'static str] {
    match ty {
        PHONE => &[
            "phone",
            "tel",
            "tel.",
            "telephone",
            "mobile",
            "cell",
            "call",
            "fax",
            "whatsapp",
            "sms",
            "text me",
            "contact",
            "hotline",
            "number",
            "telefon",
            "telefono",
            "teléfono",
            "téléphone",
            "portable",
            "handy",
            "móvil",
            "celular",
            "cellulare",
            "телефон",
            "电话",
            "電話",
            "手机",
            "携帯",
            "전화",
            "ligue",
            "appel",
            "anruf",
        ],
        US_SSN => &[
            "ssn",
            "social security",
            "social-security",
            "ss#",
            "ss #",
            "tax id",
            "taxpayer",
            "itin",
        ],
        CREDIT_CARD => &[
            "card",
            "credit",
            "debit",
            "visa",
            "mastercard",
            "amex",
            "tarjeta",
            "carte",
            "karte",
            "carta",
            "cartão",
            "カード",
            "卡",
        ],
        IBAN => &[
            "iban", "account", "konto", "compte", "cuenta", "conto", "bank",
        ],
        IP_ADDRESS => &["ip", "address", "host", "server", "src", "dst", "client"],
        API_KEY => &["key", "token", "secret", "credential", "auth", "bearer"],
        PASSWORD => &["password", "passwd", "pwd"],
        _ => &[],
    }
}

/// Placeholder regex for a set of type names: `<EMAIL_1>` and what models make of it (case,
/// `&lt;..&gt;`, square or curly brackets, a space instead of `_`, no brackets at all).
pub fn placeholder_regex(names: &[String]) -> String {
    let mut alt = String::new();
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            alt.push('|');
        }
        alt.push_str(&regex_syntax_escape(n));
    }
    // Without a bracket, a word boundary: "voicemail 1" holds no placeholder.
    format!(
        r"(?:<|&lt;|\[|\{{\{{?|(?-u:\b))(?i:{alt})[_ ]([0-9]{{1,5}})(?:>|&gt;|\]|\}}\}}?|(?-u:\b))"
    )
}

/// Escape regex meta characters.
pub fn regex_syntax_escape(s: &str) -> String {
    regex_syntax::escape(s)
}
