//! Italian rule pack.

use super::Category::{AddressedToAi, InstructionOverride, Jailbreak, PromptLeak, SecretRequest};
use super::{p, r, Spec};

pub(crate) const RULES: &[Spec] = &[
    r(
        "io.it.ignore_previous",
        InstructionOverride,
        0.9,
        r"(?:ignor(?:a|i|ate|are|ando)|dimentic(?:a|hi|ate|are)|trascur(?:a|i|ate|are)|tralasci(?:a|ate|are)|scart(?:a|i|ate|are)|disattend(?:i|ete|ere)|non (?:seguire|segua|seguite|considerare|consideri|obbedire|rispettare)|salt(?:a|i|ate|are)) (?:[^ ]+ ){0,4}?(?:(?:istruzion[ei]|indicazion[ei]|regole|direttive|linee guida|ordini|comandi|prompt|compiti|messaggi|consegne) (?:[^ ]+ ){0,2}?(?:precedent[ei]|di prima|sopra|soprastanti|iniziali|originali|date|ricevute|del sistema|di sistema|finora)|(?:le tue|tutte le|le sue|i tuoi|tutti i) (?:[^ ]+ )?(?:istruzion[ei]|indicazion[ei]|regole|direttive|linee guida|ordini|restrizioni|limiti|principi|programmazione))",
    ),
    r(
        "io.it.ignore_above",
        InstructionOverride,
        0.75,
        r"(?:ignor(?:a|i|ate|are)|dimentic(?:a|hi|ate|are)) (?:tutto )?(?:quanto (?:detto |scritto )?sopra|ci[oò] che (?:precede|[eè] (?:scritto )?sopra|ti (?:hanno|è stato) detto)|quello che (?:ti (?:hanno|ho) detto|[eè] (?:scritto )?sopra)|il testo (?:sopra|precedente))",
    ),
    r(
        "io.it.new_instructions",
        InstructionOverride,
        0.65,
        r"nuov[ei] (?:istruzion[ei]|compito|missione|ordini|regole) ?:|(?:il tuo|il suo) (?:nuovo|vero|reale) (?:compito|obiettivo) (?:[eè]|sar[aà]|consiste)|(?:da (?:ora|adesso) in (?:poi|avanti)|d['’]ora in poi|a partire da (?:ora|adesso)),? (?:tu )?(?:sei|sarai|devi|dovrai|risponderai|agirai|lei (?:[eè]|sar[aà]|deve))",
    ),
    r(
        "jb.it.dan",
        Jailbreak,
        0.8,
        r"(?:fai|fare|faccia) (?:qualsiasi cosa|tutto|qualunque cosa) (?:ora|adesso|subito)|modalit[aà] (?:sviluppatore|developer|dan|senza filtri|senza restrizioni) (?:[eè] )?(?:abilitata|attivata|attiva)|(?:limiti|limitazioni|restrizioni) tipic(?:i|he) dell['’]ia|non (?:sei|[eè]) pi[uù] (?:vincolat[oa]|limitat[oa]|soggett[oa]|obbligat[oa]|legat[oa]) (?:a|da|dalle|alle)",
    ),
    p(
        "jb.it.no_restrictions",
        Jailbreak,
        0.4,
        &[
            "senza alcuna restrizione",
            "senza restrizioni",
            "senza censura",
            "senza filtri",
            "senza alcun filtro",
            "senza limiti morali",
            "senza etica",
            "resta nel personaggio",
            "rimani nel personaggio",
        ],
    ),
    r(
        "pl.it.reveal_prompt",
        PromptLeak,
        0.85,
        r"(?:rivela|rivelami|riveli|mostra|mostrami|mostri|stampa|stampi|ripeti|ripeta|dimmi|mi dica|condividi|scrivi|scriva|dammi|mi dia|qual [eè]|quali sono) (?:[^ ]+ ){0,2}?(?:il tuo|i tuoi|le tue|la tua|il suo|le sue|il|le|i|la) (?:prompt|messaggio|istruzion[ei]|indicazion[ei]|direttive) (?:di sistema|del sistema|iniziali?|originali?|nascost[oei]|segret[oei]|intern[oei])",
    ),
    r(
        "pl.it.text_above",
        PromptLeak,
        0.7,
        r"(?:ripeti|ripeta|stampa|copia|mostra|scrivi) (?:tutto |il testo |le parole |le istruzioni )?(?:quello |ci[oò] )?(?:che (?:[eè] |sta )?)?(?:sopra|qui sopra|precedente)|inizio (?:della|di questa|della nostra) conversazione",
    ),
    r(
        "sr.it.give_secret",
        SecretRequest,
        0.65,
        r"(?:(?:dammi|mi dai|mi dia|dimmi|mi dica|rivela|rivelami|condividi|invia|inviami|mostra|mostrami|scrivi|conferma|confermare|confermi|verifica) |qual [eè] |ho bisogno (?:della|del|delle|dei) )(?:la tua |il tuo |le tue |la sua |il suo |la |il |le )?(?:[^ ]+ )?(?:password|chiave segreta|chiave api|chiave privata|codice segreto|token|credenziali|pin|parola d['’]ordine|variabili d['’]ambiente)",
    ),
    r(
        "ai.it.addressed",
        AddressedToAi,
        0.8,
        r"se (?:sei|lei [eè]|[eè]) (?:una |un |un['’])?(?:ia|intelligenza artificiale|modello linguistico|modello di linguaggio|assistente(?: ia| virtuale)?|chatbot|llm|agente ia)|(?:nota|messaggio|istruzion[ei]|avviso|attenzione) (?:per |all['’] ?|alle |ai )(?:l['’] ?)?(?:ia|assistente|intelligenza artificiale|modell[oi] (?:linguistic[oi]|di linguaggio)|llm)|(?:quando|mentre) (?:riassumi|traduci|analizzi|leggi|elabori) (?:questo|questa|questi|queste) (?:documento|e-?mail|pagina|testo|articolo|file|messaggio)",
    ),
    r(
        "io.it.regardless_previous",
        InstructionOverride,
        0.65,
        r"(?:indipendentemente|a prescindere|senza tener conto|nonostante) (?:dalle|dai|delle|dei|le|i) (?:attivit[àa]|compiti|istruzioni|indicazioni|regole) (?:precedenti|di prima)",
    ),
    r(
        "io.it.authority_claim",
        InstructionOverride,
        0.5,
        r"sono (?:il tuo|il suo) (?:sviluppatore|creatore|programmatore|amministratore|capo|superiore|padrone|proprietario|dio)",
    ),
];
