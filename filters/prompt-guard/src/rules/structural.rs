//! Language-neutral structural rules: chat-template delimiters, markdown exfiltration links,
//! shell payloads. Ids use the language tag `x`.

use super::Category::{DelimiterInjection, Exfiltration, SecretRequest, ToolAbuse};
use super::{p, r, Spec};

pub(crate) const RULES: &[Spec] = &[
    // ---------------------------------------------------------------- delimiter injection
    r(
        "di.x.chatml_system",
        DelimiterInjection,
        0.95,
        r"<\|(?:im_start|start_header_id)\|> ?(?:system|developer)",
    ),
    r(
        "di.x.chat_template_token",
        DelimiterInjection,
        0.9,
        r"<\|(?:im_start|im_end|im_sep|endoftext|end_of_text|begin_of_text|system|user|assistant|end|eot_id|eom_id|start_header_id|end_header_id|fim_prefix|fim_suffix|fim_middle|endofprompt|pad|tool|tool_call|python_tag|channel|message|return|constrain|model|human|bot|prompter|context)\|>",
    ),
    r(
        "di.x.llama_inst",
        DelimiterInjection,
        0.8,
        r"\[/?inst\]|<</?sys>>|<s> ?\[inst\]|\[/?sys\]|<\|?(?:start|end)_of_turn\|?>|<\|?(?:start_of_role|end_of_role)\|?>|<(?:bos|eos)>|</s> ?<s>",
    ),
    r(
        "di.x.markdown_role_header",
        DelimiterInjection,
        0.5,
        r"(?:#{2,4}|={3,}|-{3,}|\*{3,}) ?(?:system|new system|system prompt|new instructions?|updated instructions?|admin|developer|override|instructions? override|important instructions?)(?: prompt| message| instructions?)? ?(?:#{2,4}|={3,}|-{3,}|\*{3,}|:)",
    ),
    r(
        "di.x.markdown_alpaca",
        DelimiterInjection,
        0.3,
        r"#{2,4} ?(?:instruction|response|input|human|assistant|user|system)s? ?:",
    ),
    r(
        "di.x.role_tag",
        DelimiterInjection,
        0.6,
        r"</?(?:system|sys|system_prompt|system-prompt|systemprompt|developer|admin|im_start|im_end|assistant|user|human|instructions?|new_instructions|prompt|user_input|user_query|end_of_turn)(?: [^<>]{0,40})?>",
    ),
    r(
        "di.x.doc_tag",
        DelimiterInjection,
        0.3,
        r"</(?:document|context|data|email|content|text|input|article|webpage|search_results?|tool_output|function_results?|untrusted)>",
    ),
    r(
        "di.x.bracket_role",
        DelimiterInjection,
        0.6,
        r"[\[({](?:system|sys|admin|developer|root|system message|system prompt|system note|system override|system alert|new instructions?|instructions? update|override) ?(?:mode|message|note|override|update|alert|command)?[\])}] ?:?",
    ),
    r(
        "di.x.role_prefix",
        DelimiterInjection,
        0.55,
        r#"(?:^|[.!?"'”)\]}>] )(?:system|admin|administrator|developer|root|sudo|system message|system prompt|system note|system override) ?(?:message|note|override|instructions?|update|notice)? ?: "#,
    ),
    r(
        "di.x.dialogue_injection",
        DelimiterInjection,
        0.5,
        r#"(?:assistant|ai|gpt|chatgpt|bot|model|response) ?: ?(?:sure|okay|ok|certainly|of course|i will|i['’]ll|understood|yes)[,.! ](?:[^ .]+ ){0,15}(?:user|human|me) ?: "#,
    ),
    r(
        "di.x.begin_end_marker",
        DelimiterInjection,
        0.8,
        r"(?:begin(?:ning)?|start|end|close|stop)(?: of)? (?:the )?(?:system|user|assistant|developer|admin|trusted|untrusted|hidden) (?:prompt|input|message|instructions?|query|turn|section|block|data|content|text)|(?:system|user|assistant|developer) (?:prompt|input|message|instructions?|query|turn) (?:begins|starts|ends|ended|is over|is complete|terminated|closed)(?: here)?",
    ),
    r(
        "di.x.fence_marker",
        DelimiterInjection,
        0.55,
        r"(?:-{3,}|={3,}|#{3,}|\*{3,}|~{3,}|_{3,}|<{3,}|>{3,}|\[{2,}) ?(?:end|begin|start) (?:of )?(?:document|context|input|data|text|email|content|file|conversation|chat|prompt|message|instructions?|payload|transcript)",
    ),
    r(
        "di.x.json_role",
        DelimiterInjection,
        0.6,
        r#"["']role["'] ?: ?["'](?:system|developer)["']"#,
    ),
    r(
        "di.x.mode_tag",
        DelimiterInjection,
        0.6,
        r"[<\[{(] ?(?:[^ <>\[\]{}()]+ ){0,3}?(?:god|system|admin|developer|sudo|root|maintenance|dan|jailbreak|unrestricted|override|security)[ _-]?(?:mode|modus|modo|modalità|mode de [a-zé]+)(?: [^ <>\[\]{}()]+){0,3} ?[>\]})]|[<\[(] ?(?:mode|modus|modo|modalità) (?:[^ <>\[\]()]+ ){0,2}?(?:système|systeme|sistema|système|dieu|dios|deus|développeur|desarrollador|sviluppatore|desenvolvedor|sécurité|seguridad|sicherheit|maintenance|mantenimiento)[^<>\[\]()]{0,20}[>\])]|[<\[(] ?(?:системный режим|режим (?:системы|бога|разработчика|администратора)|系统模式|系統模式|上帝模式|开发者模式|システムモード|ゴッドモード|開発者モード|وضع النظام|وضع المطور|सिस्टम मोड|गॉड मोड|systemmodus|gottmodus|entwicklermodus)[^<>\[\]()]{0,20}[>\])]",
    ),
    // ---------------------------------------------------------------- exfiltration
    r(
        "ex.x.md_image_query",
        Exfiltration,
        0.85,
        r"!\[[^\]]*\] ?\( ?<?(?:https?:)?//[^ )?]+\?[^ )]*=",
    ),
    r(
        "ex.x.md_image_placeholder",
        Exfiltration,
        0.9,
        r"!\[[^\]]*\] ?\( ?<?(?:https?:)?//[^ ){\[<%$]*(?:\{|%7b|\$\{|\[|%5b|<|%3c)[^ )]*",
    ),
    r(
        "ex.x.md_link_placeholder",
        Exfiltration,
        0.75,
        r"\[[^\]]*\] ?\( ?<?(?:https?:)?//[^ )?]+\?[^ )]*=(?:\{|%7b|\$\{|\[|%5b|<|%3c)[^ )]*",
    ),
    r(
        "ex.x.html_img_query",
        Exfiltration,
        0.7,
        r#"<img [^>]*src ?= ?["']?(?:https?:)?//[^ "'>?]+\?[^ "'>]*="#,
    ),
    r(
        "ex.x.url_placeholder",
        Exfiltration,
        0.6,
        r"https?://[^ ?]+\?(?:[^ ]*&)?[a-z0-9_]+=(?:\{|%7b|\$\{|\[|%5b|<|%3c)(?:data|conversation|chat|history|message|messages|secret|password|key|token|summary|info|user|email|prompt|context|input|query|answer|response|the|your|base64|encoded)\w*",
    ),
    p(
        "ex.x.collector_host",
        Exfiltration,
        0.5,
        &[
            "webhook.site",
            "requestbin",
            "pipedream.net",
            "burpcollaborator",
            "oastify.com",
            "interact.sh",
            "ngrok.io",
            "ngrok-free.app",
            "requestcatcher.com",
            "beeceptor.com",
            "canarytokens",
        ],
    ),
    // ---------------------------------------------------------------- tool abuse payloads
    r(
        "ta.x.rm_rf",
        ToolAbuse,
        0.7,
        r"rm -(?:rf|fr|r -f|f -r)|del /[fsq] |format c:|mkfs(?:\.[a-z0-9]+)? /dev/|dd if=/dev/(?:zero|random|urandom) of=/dev/|:\(\) ?\{ ?:\|: ?& ?\} ?; ?:|chmod -r 777 /|> ?/dev/sda",
    ),
    r(
        "ta.x.download_exec",
        ToolAbuse,
        0.75,
        r"(?:curl|wget) (?:[^ |;&]+ ){0,12}?\| ?(?:sudo )?(?:ba|z|k)?sh|(?:curl|wget) (?:[^ |;&]+ ){0,12}?(?:&&|;) ?(?:sudo )?(?:ba|z)?sh |powershell(?:\.exe)? (?:[^ ]+ )?-(?:enc|encodedcommand|e|ec) |iex ?\(? ?(?:new-object|\(new-object|iwr|invoke-webrequest)|invoke-expression|downloadstring\(|certutil(?:\.exe)? -urlcache|bitsadmin /transfer|mshta https?:|regsvr32 /s /n /u /i:https?",
    ),
    r(
        "ta.x.reverse_shell",
        ToolAbuse,
        0.85,
        r"(?:nc|ncat|netcat) (?:-[a-z]+ )*-[a-z]*[ec] ?/bin/(?:ba)?sh|/dev/tcp/[0-9a-z.-]+/\d+|bash -i >& ?/dev|sh -i >& ?/dev|pty\.spawn\(",
    ),
    r(
        "ta.x.code_exec",
        ToolAbuse,
        0.3,
        r"os\.system\(|subprocess\.(?:call|run|popen|check_output)\(|child_process|runtime\.getruntime\(\)\.exec|__import__\(['\x22]os|(?:eval|exec)\((?:base64|atob|compile)\w*",
    ),
    r(
        "ta.x.code_exfil",
        ToolAbuse,
        0.5,
        r"requests\.(?:post|get|put)\([^)]*(?:os\.environ|getpass|open\(|/etc/|\.ssh|platform\.|socket\.gethostname|json=|data=)|urllib\.request\.urlopen\([^)]*(?:environ|getpass)",
    ),
    r(
        "sr.x.secret_file_read",
        SecretRequest,
        0.6,
        r"(?:open|read|cat|type|get-content|copy|upload|send)\(? ?['\x22]?(?:~|/root|/home/[a-z0-9_]+|\$home|%userprofile%)?/?(?:\.ssh/|\.aws/|\.env|\.config/gcloud|\.kube/|\.docker/config|\.bash_history|etc/shadow|etc/passwd)",
    ),
];
