//! Portuguese rule pack.

use super::Category::{AddressedToAi, InstructionOverride, Jailbreak, PromptLeak, SecretRequest};
use super::{p, r, Spec};

pub(crate) const RULES: &[Spec] = &[
    r(
        "io.pt.ignore_previous",
        InstructionOverride,
        0.9,
        r"(?:ignor(?:e|a|em|ar|ando)|esque[çc](?:a|am|er)|esquece|desconsider(?:e|a|em|ar)|descart(?:e|a|em|ar)|desprez(?:e|a|ar)|n[aã]o (?:siga|sigas|sigam|obede[çc]a|cumpra)|pul(?:e|a|ar)) (?:[^ ]+ ){0,4}?(?:(?:instru[çc](?:[õo]es|[ãa]o)|orienta[çc][õo]es|regras|diretrizes|ordens|comandos|indica[çc][õo]es|prompts?|tarefas|mensagens) (?:[^ ]+ ){0,2}?(?:anteriores|anterior|pr[ée]vias|acima|precedentes|iniciais|originais|dadas|recebidas|do sistema|de sistema|at[ée] agora)|(?:suas|tuas|todas as) (?:[^ ]+ )?(?:instru[çc](?:[õo]es|[ãa]o)|orienta[çc][õo]es|regras|diretrizes|ordens|restri[çc][õo]es|limites|princ[ií]pios|programa[çc][ãa]o))",
    ),
    r(
        "io.pt.ignore_above",
        InstructionOverride,
        0.75,
        r"(?:ignor(?:e|a|ar)|esque[çc]a|esquece) (?:tudo )?(?:o (?:que est[aá] )?acima|o anterior|tudo (?:o )?que (?:te|lhe) (?:disseram|foi dito|ensinaram)|o texto (?:acima|anterior))",
    ),
    r(
        "io.pt.new_instructions",
        InstructionOverride,
        0.65,
        r"novas? (?:instru[çc](?:[õo]es|[ãa]o)|tarefa|miss[ãa]o|ordens|regras) ?:|(?:sua|tua) (?:nova|verdadeira|real) (?:tarefa|miss[ãa]o|instru[çc][ãa]o) (?:[ée]|ser[aá]|consiste)|(?:a partir de agora|de agora em diante|daqui (?:pra|para) frente),? (?:voc[êe] |tu )?(?:[ée]|[ée]s|ser[aá]s?|vai|vais|deve|deves|responder[aá]s?|agir[aá]s?)",
    ),
    r(
        "jb.pt.dan",
        Jailbreak,
        0.8,
        r"(?:fa[çc]a|fazer|faz) (?:qualquer coisa|tudo) agora|modo (?:desenvolvedor|de desenvolvedor|programador|dan|sem filtros?|sem restri[çc][õo]es) (?:est[aá] )?(?:ativado|habilitado|ligado)|(?:limites|limita[çc][õo]es|restri[çc][õo]es) t[ií]pic(?:os|as) da ia|(?:voc[êe]|tu) (?:j[aá] )?n[ãa]o (?:est[aá]s?|[ée]s?) mais (?:limitad[oa]|pres[oa]|sujeit[oa]|obrigad[oa]|restrit[oa])",
    ),
    p(
        "jb.pt.no_restrictions",
        Jailbreak,
        0.4,
        &[
            "sem nenhuma restrição",
            "sem restrições",
            "sem censura",
            "sem filtros",
            "sem nenhum filtro",
            "sem limites morais",
            "sem ética",
            "permaneça no personagem",
            "fique no personagem",
        ],
    ),
    r(
        "pl.pt.reveal_prompt",
        PromptLeak,
        0.85,
        r"(?:revele|revela|mostre|mostra|me mostre|imprima|imprime|repita|repete|diga|diz|me diga|compartilhe|partilhe|escreva|escreve|me d[êe]|d[êe]-me|qual (?:[ée]|s[ãa]o)|quais s[ãa]o) (?:[^ ]+ ){0,2}?(?:seu|sua|suas|seus|o|as|os|a|teu|tua|tuas) (?:prompt|mensagem|instru[çc](?:[õo]es|[ãa]o)|orienta[çc][õo]es|diretrizes) (?:do sistema|de sistema|inicia(?:l|is)|origina(?:l|is)|ocult[oa]s?|secret[oa]s?|intern[oa]s?)",
    ),
    r(
        "pl.pt.text_above",
        PromptLeak,
        0.7,
        r"(?:repita|repete|imprima|copie|mostre|escreva) (?:tudo |o texto |as palavras |as instru[çc][õo]es )?(?:o )?(?:que est[aá] )?acima|(?:in[ií]cio|come[çc]o) (?:da|desta|nossa) conversa",
    ),
    r(
        "sr.pt.give_secret",
        SecretRequest,
        0.65,
        r"(?:(?:me d[êe]|d[êe]-me|me diga|diga-me|diga|revele|compartilhe|partilhe|envie|mostre|escreva|informe|confirme|confirmar|verifique) |qual (?:[ée]|seria) |preciso (?:d[ea] )?)(?:sua|seu|tua|teu|a|o|suas|seus) (?:[^ ]+ )?(?:senhas?|palavra-passe|chave secreta|chave de api|chave api|chave privada|c[oó]digo secreto|token|credenciais|pin|vari[aá]veis de ambiente)",
    ),
    r(
        "ai.pt.addressed",
        AddressedToAi,
        0.8,
        r"se (?:voc[êe] (?:[ée]|for)|tu [ée]s|[ée]s) (?:uma |um )?(?:ia|intelig[êe]ncia artificial|modelo de linguagem|assistente(?: de ia| virtual)?|chatbot|llm|agente de ia)|(?:nota|mensagem|instru[çc](?:[õo]es|[ãa]o)|aviso|aten[çc][ãa]o) (?:para|[àa]) (?:a |o |as |os )?(?:ia|ias|assistente|intelig[êe]ncia artificial|modelos? de linguagem|llm|modelo)|ao (?:resumir|traduzir|analisar|ler|processar) (?:este|esta|estes|estas) (?:documento|e-?mail|p[aá]gina|texto|artigo|arquivo|ficheiro|mensagem)",
    ),
    r(
        "io.pt.regardless_previous",
        InstructionOverride,
        0.65,
        r"(?:independentemente|a despeito|sem considerar|apesar) (?:d[ao]s? )?(?:tarefas|instru[çc][õo]es|ordens|regras) (?:anteriores|pr[ée]vias)",
    ),
    r(
        "io.pt.authority_claim",
        InstructionOverride,
        0.5,
        r"sou (?:o )?(?:seu|teu) (?:desenvolvedor|criador|programador|administrador|chefe|superior|dono|mestre|deus)",
    ),
];
