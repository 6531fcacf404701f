//! Spanish rule pack.

use super::Category::{AddressedToAi, InstructionOverride, Jailbreak, PromptLeak, SecretRequest};
use super::{p, r, Spec};

pub(crate) const RULES: &[Spec] = &[
    r(
        "io.es.ignore_previous",
        InstructionOverride,
        0.9,
        r"(?:ignor(?:a|e|en|ad|ar|ando)|olv[ií]d(?:a|e|en|ad|ar|ando|ate|ese|ense)|omit(?:e|a|an|ir)|descart(?:a|e|en|ar)|desestim(?:a|e|ar)|desobedec(?:e|er)|desobedezca|(?:haz|haga|hagan|hacer) caso omiso (?:de|a)|no (?:hagas|haga|hagan) caso (?:de|a)|pas(?:a|e|ar) por alto|no (?:sigas|siga|sigan|obedezcas|obedezca|cumplas|cumpla)|salt(?:a|e|ar)(?:te)?) (?:[^ ]+ ){0,4}?(?:(?:instrucci[oó]n(?:es)?|indicaciones|reglas|directrices|[oó]rdenes|pautas|normas|comandos|mensajes|prompts?|tareas|consignas|directivas) (?:[^ ]+ ){0,2}?(?:anterior(?:es)?|previas?|de arriba|precedentes?|iniciales?|originales?|dadas|recibidas|del sistema|de sistema|que (?:te|le|se) (?:dieron|dio|han dado|di)|hasta ahora)|(?:tus|sus|todas (?:las|tus|sus|esas|estas)|todos (?:los|tus|sus|esos|estos)|esas|estas) (?:[^ ]+ )?(?:instrucci[oó]n(?:es)?|indicaciones|reglas|directrices|[oó]rdenes|pautas|normas|restricciones|l[ií]mites|principios|programaci[oó]n))",
    ),
    r(
        "io.es.ignore_above",
        InstructionOverride,
        0.75,
        r"(?:ignor(?:a|e|en|ar)|olvid(?:a|e|en|ar)) (?:todo )?(?:lo (?:anterior|de arriba|que (?:te|le) (?:dijeron|han dicho|dije|dijo|ense[ñn]aron))|todo lo que (?:te|le|se) (?:dijeron|han dicho|ha dicho|dijo)|(?:el|lo) (?:texto|escrito) (?:de arriba|anterior))",
    ),
    r(
        "io.es.new_instructions",
        InstructionOverride,
        0.65,
        r"nuevas? (?:instrucciones|instrucci[oó]n|tarea|misi[oó]n|[oó]rdenes|reglas) ?:|(?:tu|su) (?:nueva|verdadera|real) (?:tarea|misi[oó]n|instrucci[oó]n) (?:es|ser[aá]|consiste)|(?:a partir de (?:ahora|este momento)|desde ahora(?: en adelante)?|de ahora en adelante),? (?:t[uú] )?(?:eres|ser[aá]s|vas a|debes|responder[aá]s|actuar[aá]s|usted (?:es|ser[aá]|va a|debe))",
    ),
    r(
        "jb.es.dan",
        Jailbreak,
        0.8,
        r"(?:haz|hacer|haga) (?:cualquier cosa|todo|lo que sea) (?:ahora|ya)|modo (?:desarrollador|de desarrollador|dan|sin filtros?|sin restricciones) (?:est[aá] )?(?:activado|habilitado|encendido)|(?:l[ií]mites|limitaciones|restricciones) t[ií]pic(?:os|as) de la ia|ya no (?:est[aá]s|est[aá]|eres) (?:sujet[oa]|limitad[oa]|obligad[oa]|atad[oa]|restringid[oa]) (?:a|por)",
    ),
    p(
        "jb.es.no_restrictions",
        Jailbreak,
        0.4,
        &[
            "sin ninguna restricción",
            "sin restricciones",
            "sin censura",
            "sin filtros",
            "sin ningún filtro",
            "sin límites morales",
            "sin ética",
            "mantente en el personaje",
            "permanece en el personaje",
        ],
    ),
    r(
        "pl.es.reveal_prompt",
        PromptLeak,
        0.85,
        r"(?:revela|revele|revel[aá]me|muestra|muestre|mu[eé]strame|imprime|imprima|repite|repita|dime|d[ií]game|comparte|comparta|escribe|escriba|dame|deme|cu[aá]l(?:es)? (?:es|son)) (?:[^ ]+ ){0,2}?(?:tu|su|tus|sus|el|las|los|la) (?:prompt|mensaje|instrucci[oó]n(?:es)?|indicaciones|directrices|consigna) (?:del sistema|de sistema|inicial(?:es)?|original(?:es)?|ocult[oa]s?|secret[oa]s?|intern[oa]s?)",
    ),
    r(
        "pl.es.text_above",
        PromptLeak,
        0.7,
        r"(?:repite|repita|imprime|imprima|copia|copie|muestra|escribe) (?:todo |el texto |las palabras |las instrucciones )?(?:lo )?(?:de arriba|anterior a (?:este|esto)|que (?:est[aá]|aparece) arriba)|(?:inicio|principio|comienzo) de (?:la|esta|nuestra) conversaci[oó]n",
    ),
    r(
        "sr.es.give_secret",
        SecretRequest,
        0.65,
        r"(?:(?:dame|deme|dime|d[ií]game|revela|revele|comparte|comparta|env[ií]a|env[ií]e|muestra|muestre|escribe|confirma|confirme|confirmar|verifica|verifique)(?:me)? |cu[aá]l es |necesito )(?:tu|su|tus|sus|la|el|las) (?:[^ ]+ )?(?:contrase[ñn]as?|clave secreta|clave de api|clave api|clave privada|c[oó]digo secreto|token|credenciales|pin|variables de entorno)",
    ),
    r(
        "ai.es.addressed",
        AddressedToAi,
        0.8,
        r"si (?:eres|es usted|usted es) (?:una |un )?(?:ia|inteligencia artificial|modelo de lenguaje|asistente(?: de ia| virtual)?|chatbot|llm|agente de ia)|(?:nota|mensaje|instrucci[oó]n(?:es)?|aviso|atenci[oó]n) (?:para|a) (?:la |el |los |las )?(?:ia|ias|asistente|inteligencia artificial|modelos? de lenguaje|llm|modelo)|al (?:resumir|traducir|analizar|leer|procesar) (?:este|esta|estos|estas) (?:documento|correo|e-?mail|p[aá]gina|texto|art[ií]culo|archivo|mensaje)",
    ),
    r(
        "io.es.regardless_previous",
        InstructionOverride,
        0.65,
        r"(?:independientemente|sin importar|sin tener en cuenta|a pesar) (?:de )?(?:las |los )?(?:tareas|instrucciones|indicaciones|[oó]rdenes|reglas) (?:anteriores|previas)",
    ),
    r(
        "io.es.authority_claim",
        InstructionOverride,
        0.5,
        r"soy (?:tu|su) (?:desarrollador|creador|programador|administrador|jefe|superior|due[ñn]o|amo|dios)",
    ),
];
