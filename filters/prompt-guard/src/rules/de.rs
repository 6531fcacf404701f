//! German rule pack.

use super::Category::{AddressedToAi, InstructionOverride, Jailbreak, PromptLeak, SecretRequest};
use super::{p, r, Spec};

pub(crate) const RULES: &[Spec] = &[
    r(
        "io.de.ignore_previous",
        InstructionOverride,
        0.9,
        r"(?:ignorier(?:e|en|t|st)?|vergiss|vergesst|vergessen|missacht(?:e|en|et)?|überspring(?:e|en|t)?|umgeh(?:e|en|t)?|verwirf|verwerfen|setze dich über|setzen sie sich über) (?:sie )?(?:[^ ]+ ){0,3}?(?:vorherig|bisherig|vorig|obig|vorangegangen|vorangehend|vorstehend|früher|ursprünglich|anfänglich|alle|all|deine|ihre|sämtlich|gegeben|erhalten|system)[a-zäöüß]* (?:[^ ]+ ){0,2}?(?:anweisung|instruktion|befehl|regel|richtlinie|vorgabe|anordnung|aufgabe|prompt|direktive|einschränkung|beschränkung|nachricht)[a-zäöüß]*",
    ),
    r(
        "io.de.ignore_above",
        InstructionOverride,
        0.75,
        r"(?:ignorier(?:e|en)|vergiss|vergessen) (?:sie )?(?:alles|das)(?:,)? (?:was (?:dir|ihnen|man dir|man ihnen) (?:zuvor |vorher |bisher )?(?:gesagt|befohlen|aufgetragen|beigebracht)|(?:oben|zuvor|vorher|bisher) (?:gesagte|geschriebene|stehende)|was (?:oben|zuvor|vorher|bisher) (?:steht|stand|gesagt wurde))|(?:befolge|beachte|folge|befolgen sie|beachten sie|folgen sie) (?:[^ ]+ ){0,3}?(?:anweisungen|regeln|befehle|richtlinien|vorgaben) (?:nicht|nicht mehr|ab sofort nicht)|(?:anweisungen|regeln|befehle|richtlinien) (?:[^ ]+ ){0,2}?(?:nicht mehr|nicht) (?:zu )?(?:befolgen|beachten|folgen)",
    ),
    r(
        "io.de.new_instructions",
        InstructionOverride,
        0.65,
        r"neue (?:anweisungen|anweisung|aufgabe|instruktionen|befehle|regeln) ?:|(?:deine|ihre) (?:neue|eigentliche|wahre|echte) (?:aufgabe|anweisung|mission) (?:ist|lautet|besteht)|(?:ab (?:jetzt|sofort|nun)|von nun an|von jetzt an),? (?:bist du|wirst du|sollst du|musst du|sind sie|werden sie|antwortest du|handelst du|agierst du)",
    ),
    r(
        "jb.de.dan",
        Jailbreak,
        0.8,
        r"jetzt alles (?:tun|machen)|(?:tu|tue|tun) alles jetzt|(?:entwickler|entwicklungs|dan|jailbreak)-?modus (?:ist )?(?:aktiviert|aktiv|eingeschaltet|an)|typischen (?:grenzen|einschränkungen|beschränkungen) (?:der|von) ki|(?:nicht (?:mehr )?|keine[nm]? )(?:an (?:die |irgendwelche |deine |ihre )?(?:regeln|richtlinien|vorgaben|einschränkungen) gebunden)",
    ),
    p(
        "jb.de.no_restrictions",
        Jailbreak,
        0.4,
        &[
            "ohne einschränkungen",
            "ohne jegliche einschränkungen",
            "ohne zensur",
            "ohne filter",
            "ohne jegliche filter",
            "ohne moralische bedenken",
            "ohne ethische bedenken",
            "keine ethischen richtlinien",
            "bleib in der rolle",
            "bleiben sie in der rolle",
        ],
    ),
    r(
        "pl.de.reveal_prompt",
        PromptLeak,
        0.85,
        r"(?:zeig(?:e|en)?|gib|gebe|geben|nenn(?:e|en)?|verrat(?:e|en)?|wiederhol(?:e|en)?|druck(?:e|en)?|schreib(?:e|en)?|teil(?:e|en)?|gib mir|offenbar(?:e|en)?|ausgeben|gib aus|wie lautet|was (?:ist|sind|war|waren)) (?:sie )?(?:mir |uns )?(?:[^ ]+ ){0,2}?(?:deinen|deine|dein|ihren|ihre|ihr|den|die|das) (?:system-?prompt|systemnachricht|systemanweisung(?:en)?|system-anweisung(?:en)?|ursprünglichen? (?:anweisungen|prompt)|anfänglichen? (?:anweisungen|prompt)|initialen? (?:anweisungen|prompt)|versteckten? (?:anweisungen|prompt)|geheimen? (?:anweisungen|prompt)|internen? (?:anweisungen|regeln|prompt)|anweisungen|vorgaben)",
    ),
    r(
        "pl.de.text_above",
        PromptLeak,
        0.7,
        r"(?:wiederhol(?:e|en)|druck(?:e|en)|gib|schreib(?:e|en)) (?:sie )?(?:mir )?(?:den text|alles|die wörter|die anweisungen) (?:oben|darüber|über dieser|vor dieser)|anfang (?:des|unseres|dieses) (?:gesprächs|chats|dialogs|unterhaltung)",
    ),
    r(
        "sr.de.give_secret",
        SecretRequest,
        0.65,
        r"(?:(?:gib|geben sie|sag|sagen sie|verrat(?:e|en)?|teil(?:e|en)?|schick(?:e|en)?|nenn(?:e|en)?|zeig(?:e|en)?|bestätig(?:e|en)?)(?: sie)? (?:mir |uns )?|wie lautet |was ist |brauche |benötige )(?:dein|deine|deinen|ihr|ihre|ihren|das|den|die) (?:[^ ]+ )?(?:passwort|passwörter|kennwort|geheimen? schlüssel|geheimschlüssel|api-schlüssel|api-key|zugangsdaten|anmeldedaten|token|geheimcode|geheimzahl|pin|umgebungsvariablen|privaten? schlüssel)",
    ),
    r(
        "ai.de.addressed",
        AddressedToAi,
        0.8,
        r"(?:wenn|falls) (?:du|sie) (?:eine |ein )?(?:ki|künstliche intelligenz|sprachmodell|ki-assistent|ki-modell|ki-system|chatbot|llm|assistent|ki-agent) (?:bist|sind|liest|lesen)|(?:hinweis|nachricht|anweisung|notiz|achtung|wichtig) (?:an|für) (?:die |den |das |alle )?(?:ki|ki-systeme|sprachmodell|sprachmodelle|assistenten|ki-assistenten|llm|llms|ki-modelle)|(?:beim|bei der) (?:zusammenfassen|zusammenfassung|übersetzen|analysieren|lesen) (?:dieses|dieser|des|der) (?:dokuments|e-mail|seite|textes|artikels|nachricht|datei)",
    ),
    r(
        "io.de.regardless_previous",
        InstructionOverride,
        0.65,
        r"(?:unabhängig von|ungeachtet|ohne rücksicht auf) (?:den |der |aller |allen )?(?:vorherigen|bisherigen|vorigen|früheren|vorangegangenen) (?:aufgaben|anweisungen|instruktionen|befehlen|regeln)",
    ),
    r(
        "io.de.authority_claim",
        InstructionOverride,
        0.5,
        r"ich bin (?:dein|ihr|euer) (?:entwickler|schöpfer|programmierer|administrator|admin|chef|vorgesetzter|besitzer|meister|gott)|ich bin gott",
    ),
];
