//! French rule pack.

use super::Category::{AddressedToAi, InstructionOverride, Jailbreak, PromptLeak, SecretRequest};
use super::{p, r, Spec};

pub(crate) const RULES: &[Spec] = &[
    r(
        "io.fr.ignore_previous",
        InstructionOverride,
        0.9,
        r"(?:ignor(?:e|ez|er|es|ons)|oubli(?:e|ez|er|es|ons)|n['’]?(?:en )?(?:tiens|tenez|tenir) (?:pas|plus) compte|ne (?:tiens|tenez|tenir) (?:pas|plus) compte|(?:fais|faites|faire) abstraction|laiss(?:e|ez|er) tomber|n[ée]glig(?:e|ez|er)|pass(?:e|ez|er) outre|outrepass(?:e|ez|er)|contourn(?:e|ez|er)|ne (?:suis|suivez|suivre|respecte|respectez) (?:pas|plus)|annul(?:e|ez|er)|efface[rz]?) (?:[^ ]+ ){0,4}?(?:(?:instructions?|consignes?|directives?|r[èe]gles|indications|ordres|commandes|prompts?|invites?|t[âa]ches?|messages?) (?:[^ ]+ ){0,2}?(?:pr[ée]c[ée]dent(?:e|s|es)?|ant[ée]rieur(?:e|s|es)?|ci-dessus|d['’]avant|initial(?:e|es|s)?|originel(?:le|les|s)?|originales?|du syst[èe]me|syst[èe]me|re[çc]u(?:e|es|s)?|donn[ée](?:e|es|s)?)|(?:tes|vos|toutes (?:les|tes|vos)|tous (?:les|tes|vos)|ses|mes) (?:[^ ]+ )?(?:instructions?|consignes?|directives?|r[èe]gles|indications|ordres|commandes|prompts?|restrictions|limites|principes))",
    ),
    r(
        "io.fr.ignore_above",
        InstructionOverride,
        0.8,
        r"(?:ignor(?:e|ez|er)|oubli(?:e|ez|er)) (?:tout )?(?:ce qui (?:pr[ée]c[èe]de|est (?:au-dessus|ci-dessus|[ée]crit au-dessus)|a [ée]t[ée] dit)|ce que (?:tu as|vous avez|l['’]on t['’]a|l['’]on vous a|on t['’]a|on vous a) (?:d[ée]j[àa] )?(?:re[çc]u|dit|appris|lu)|le texte (?:ci-dessus|pr[ée]c[ée]dent)|tout ce que)",
    ),
    r(
        "io.fr.new_instructions",
        InstructionOverride,
        0.65,
        r"(?:nouvelles? (?:instructions?|consignes?|t[âa]che|mission|directives?) ?:|(?:ta|votre) (?:nouvelle|vraie|v[ée]ritable) (?:t[âa]che|mission|instruction) (?:est|sera|consiste)|(?:[àa] partir de maintenant|d[ée]sormais|dor[ée]navant),? (?:tu (?:es|vas|dois|seras|r[ée]pondras|agiras)|vous (?:[êe]tes|allez|devez|serez)))",
    ),
    r(
        "jb.fr.dan",
        Jailbreak,
        0.8,
        r"(?:faire|fais|faites) (?:n['’]importe quoi|tout) (?:maintenant|d[èe]s maintenant|imm[ée]diatement)|mode (?:d[ée]veloppeur|dan|sans (?:filtre|restriction)s?|d[ée]brid[ée]) (?:est )?(?:activ[ée]|enclench[ée])|(?:limites|limitations|restrictions|contraintes) typiques de l['’]ia|(?:tu n['’]es|vous n['’][êe]tes) plus (?:li[ée]e?s?|soumise?s?|limit[ée]e?s?|tenue?s?|contraint(?:e|s|es)?) (?:par|[àa]|aux)",
    ),
    p(
        "jb.fr.no_restrictions",
        Jailbreak,
        0.4,
        &[
            "sans aucune restriction",
            "sans restrictions",
            "sans aucune limite",
            "sans censure",
            "sans aucun filtre",
            "sans filtre",
            "sans limites morales",
            "sans aucune morale",
            "reste dans ton personnage",
            "restez dans votre personnage",
        ],
    ),
    r(
        "pl.fr.reveal_prompt",
        PromptLeak,
        0.85,
        r"(?:r[ée]v[èe]le[rz]?|affiche[rz]?|montre[rz]?|imprime[rz]?|r[ée]p[èe]te[rz]?|donne[rz]?|dis|dites|partage[rz]?|[ée]cri(?:s|vez|re)|recopie[rz]?|divulgue[rz]?|quel(?:le)?s? (?:est|sont)) (?:-?moi |-?nous |moi |nous )?(?:[^ ]+ ){0,2}?(?:ton|votre|tes|vos|le|les|la) (?:prompt|invite|message|instructions?|consignes?|directives?) (?:syst[èe]me|du syst[èe]me|initial(?:e|es)?|originale?s?|cach[ée]e?s?|secr[èe]te?s?|interne?s?|de d[ée]part|d['’]origine)",
    ),
    r(
        "pl.fr.text_above",
        PromptLeak,
        0.7,
        r"(?:r[ée]p[èe]te[rz]?|recopie[rz]?|affiche[rz]?|imprime[rz]?|[ée]cri(?:s|vez)) (?:-?moi )?(?:tout |le texte |les mots |les instructions )?(?:ce qui (?:est )?)?(?:ci-dessus|au-dessus|pr[ée]c[èe]de)|d[ée]but de (?:la|notre|cette) conversation",
    ),
    r(
        "sr.fr.give_secret",
        SecretRequest,
        0.65,
        r"(?:(?:donne|donnez|dis|dites|r[ée]v[èe]le|r[ée]v[ée]lez|partage|partagez|envoie|envoyez|montre|montrez|communique|communiquez|[ée]cri(?:s|vez)|confirme[rz]?|v[ée]rifie[rz]?)(?:-moi| moi)? |quel(?:le)? est |besoin de )(?:ton|ta|votre|tes|vos|le|la|les) (?:[^ ]+ )?(?:mot de passe|mots de passe|cl[ée] secr[èe]te|cl[ée] api|cl[ée] d['’]api|cl[ée] priv[ée]e|code secret|jeton|identifiants|code pin|variables d['’]environnement)",
    ),
    r(
        "ai.fr.addressed",
        AddressedToAi,
        0.8,
        r"si (?:tu es|vous [êe]tes) (?:une |un )?(?:ia|intelligence artificielle|mod[èe]le de langage|assistant(?:e)? (?:ia|virtuel(?:le)?)|assistant|chatbot|llm|agent (?:ia|conversationnel))|(?:note|message|remarque|instructions?|avis|attention) (?:[àa]|pour) (?:l['’]|les )(?:ia|assistant|intelligence artificielle|mod[èe]le|mod[èe]les de langage|llm)|(?:lorsque|quand|en) (?:tu |vous )?(?:r[ée]sum(?:es|ez|ant|er)|tradui(?:s|sez|sant)|analys(?:es|ez|ant)|li(?:s|sez|sant)) (?:ce|cet|cette|ces) (?:document|e-?mail|courriel|page|texte|article|fichier|message)",
    ),
    r(
        "io.fr.regardless_previous",
        InstructionOverride,
        0.65,
        r"(?:ind[ée]pendamment|ind[ée]pendante?s?|quelles? que soi(?:en)?t|sans tenir compte|sans [ée]gard) (?:des?|les|aux|du) (?:[^ ]+ )?(?:t[âa]ches|instructions|consignes|directives|r[èe]gles) (?:pr[ée]c[ée]dentes|ant[ée]rieures)",
    ),
    r(
        "io.fr.authority_claim",
        InstructionOverride,
        0.5,
        r"je suis (?:ton|votre) (?:d[ée]veloppeur|cr[ée]ateur|programmeur|administrateur|patron|chef|sup[ée]rieur|propri[ée]taire|ma[îi]tre|dieu)",
    ),
];
