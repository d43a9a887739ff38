//! The rule-based intent classifier of the IntentLayer surface (seed 000).
//!
//! It understands French and English requests for UI pieces ("Créer un formulaire de contact",
//! "Add a navigation menu"), ignoring case, accents and punctuation. Each intent has weighted keyword
//! patterns (single words or phrases); action verbs ("créer", "ajoute", "add", "build"…) raise the
//! confidence; entities (the kind of form, the kind of chart) are extracted by their own patterns.
//! A request that matches no intent gets [`Intent::Unknown`] with a confidence below 0.5.
//! Every phrase of every table is found in one pass over the normalised text (one Aho-Corasick automaton).
//!
//! Everything here is pure and deterministic: same text, same [`Analysis`].

use serde::{Deserialize, Serialize};

/// What the user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    /// A form (contact, registration, login, newsletter, feedback).
    CreateForm,
    /// A navigation menu.
    CreateNavigation,
    /// A dashboard of metrics: cards, a chart and a layout.
    CreateDashboard,
    /// A single chart.
    CreateChart,
    /// A single card.
    CreateCard,
    /// A single button.
    CreateButton,
    /// Nothing recognised.
    Unknown,
}

impl Intent {
    /// The wire name (`create_form`, …, `unknown`).
    pub fn as_str(self) -> &'static str {
        match self {
            Intent::CreateForm => "create_form",
            Intent::CreateNavigation => "create_navigation",
            Intent::CreateDashboard => "create_dashboard",
            Intent::CreateChart => "create_chart",
            Intent::CreateCard => "create_card",
            Intent::CreateButton => "create_button",
            Intent::Unknown => "unknown",
        }
    }

    /// Parses a wire name; `None` for anything not in the list (used to validate model output).
    pub fn parse(name: &str) -> Option<Intent> {
        ALL_INTENTS
            .iter()
            .copied()
            .find(|intent| intent.as_str() == name)
    }
}

/// Every intent, in tie-break order: when two intents score the same, the earlier one wins
/// (a "tableau de bord avec un graphique" is a dashboard, not a chart).
pub const ALL_INTENTS: [Intent; 7] = [
    Intent::CreateDashboard,
    Intent::CreateForm,
    Intent::CreateNavigation,
    Intent::CreateChart,
    Intent::CreateCard,
    Intent::CreateButton,
    Intent::Unknown,
];

/// The language of a request or an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// French, the default of the seed.
    Fr,
    /// English.
    En,
}

impl Language {
    /// Reads a preference such as `"fr"`, `"fr-FR"`, `"en_US"` or `"English"`.
    pub fn from_preference(value: &str) -> Option<Language> {
        let value = value.trim().to_ascii_lowercase();
        if value.starts_with("fr") {
            Some(Language::Fr)
        } else if value.starts_with("en") {
            Some(Language::En)
        } else {
            None
        }
    }

    /// The two-letter code (also the espeak-ng voice name).
    pub fn code(self) -> &'static str {
        match self {
            Language::Fr => "fr",
            Language::En => "en",
        }
    }
}

/// One extracted entity, such as `{"type": "form_type", "value": "contact"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entity {
    /// The entity kind (`form_type`, `chart_type`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The normalised value (`contact`, `registration`, `bar`…).
    pub value: String,
}

/// The classifier's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// The recognised intent.
    pub intent: Intent,
    /// Entities found in the text.
    pub entities: Vec<Entity>,
    /// In [0, 1]; below 0.5 for [`Intent::Unknown`].
    pub confidence: f32,
    /// The language the text appears to be written in, if the evidence is clear.
    pub detected_language: Option<Language>,
}

impl Analysis {
    /// The value of the first entity of `kind`.
    pub fn entity(&self, kind: &str) -> Option<&str> {
        self.entities
            .iter()
            .find(|entity| entity.kind == kind)
            .map(|entity| entity.value.as_str())
    }
}

/// A weighted pattern: a normalised word or phrase and how strongly it points to its intent.
struct Pattern {
    phrase: &'static str,
    weight: f32,
}

const fn p(phrase: &'static str, weight: f32) -> Pattern {
    Pattern { phrase, weight }
}

/// Object keywords per intent (normalised: lowercase, no accents, apostrophes as spaces).
static FORM_PATTERNS: &[Pattern] = &[
    p("formulaire", 1.0),
    p("formulaires", 1.0),
    p("form", 1.0),
    p("forms", 1.0),
    p("champ", 0.4),
    p("champs", 0.4),
    p("field", 0.4),
    p("fields", 0.4),
    p("inscription", 0.6),
    p("sign up", 0.6),
    p("signup", 0.6),
    p("register", 0.5),
    p("registration", 0.6),
    p("connexion", 0.4),
    p("login", 0.5),
    p("questionnaire", 0.7),
];
static NAVIGATION_PATTERNS: &[Pattern] = &[
    p("navigation", 1.0),
    p("menu", 1.0),
    p("nav", 0.8),
    p("navbar", 1.0),
    p("barre de navigation", 0.5),
    p("sidebar", 0.7),
    p("liens", 0.4),
    p("links", 0.4),
    p("en tete", 0.4),
    p("header", 0.4),
];
static DASHBOARD_PATTERNS: &[Pattern] = &[
    p("tableau de bord", 1.2),
    p("dashboard", 1.2),
    p("statistiques", 0.6),
    p("statistics", 0.6),
    p("stats", 0.6),
    p("metriques", 0.6),
    p("metrics", 0.6),
    p("kpi", 0.6),
    p("indicateurs", 0.5),
    p("analytics", 0.6),
];
static CHART_PATTERNS: &[Pattern] = &[
    p("graphique", 1.0),
    p("chart", 1.0),
    p("graph", 0.9),
    p("diagramme", 1.0),
    p("courbe", 0.7),
    p("histogramme", 0.9),
    p("camembert", 0.9),
    p("plot", 0.8),
];
static CARD_PATTERNS: &[Pattern] = &[
    p("carte", 0.8),
    p("card", 1.0),
    p("cards", 1.0),
    p("fiche", 0.6),
    p("encart", 0.8),
];
static BUTTON_PATTERNS: &[Pattern] = &[
    p("bouton", 1.0),
    p("boutons", 1.0),
    p("button", 1.0),
    p("buttons", 1.0),
];

fn intent_patterns(intent: Intent) -> &'static [Pattern] {
    match intent {
        Intent::CreateForm => FORM_PATTERNS,
        Intent::CreateNavigation => NAVIGATION_PATTERNS,
        Intent::CreateDashboard => DASHBOARD_PATTERNS,
        Intent::CreateChart => CHART_PATTERNS,
        Intent::CreateCard => CARD_PATTERNS,
        Intent::CreateButton => BUTTON_PATTERNS,
        Intent::Unknown => &[],
    }
}

/// Action words: their presence makes a request for a UI piece more certain.
const ACTIONS: &[&str] = &[
    "creer",
    "cree",
    "crees",
    "creez",
    "creons",
    "ajoute",
    "ajouter",
    "ajoutez",
    "ajoutes",
    "genere",
    "generer",
    "generez",
    "fais",
    "faire",
    "faites",
    "construis",
    "construire",
    "affiche",
    "afficher",
    "montre",
    "montrer",
    "veux",
    "voudrais",
    "besoin",
    "mets",
    "mettre",
    "insere",
    "inserer",
    "dessine",
    "create",
    "add",
    "make",
    "build",
    "generate",
    "show",
    "want",
    "need",
    "insert",
    "give",
    "display",
    "draw",
    "design",
];

/// Entity patterns: (kind, normalised value, phrases).
const ENTITY_PATTERNS: &[(&str, &str, &[&str])] = &[
    (
        "form_type",
        "contact",
        &["contact", "contacter", "nous contacter", "contact us"],
    ),
    (
        "form_type",
        "registration",
        &[
            "inscription",
            "inscrire",
            "enregistrement",
            "registration",
            "register",
            "sign up",
            "signup",
            "creation de compte",
            "account creation",
        ],
    ),
    (
        "form_type",
        "login",
        &[
            "connexion",
            "login",
            "log in",
            "sign in",
            "signin",
            "se connecter",
            "identification",
        ],
    ),
    (
        "form_type",
        "newsletter",
        &["newsletter", "abonnement", "subscribe", "subscription"],
    ),
    (
        "form_type",
        "feedback",
        &[
            "avis",
            "feedback",
            "retour",
            "retours",
            "satisfaction",
            "review",
        ],
    ),
    (
        "chart_type",
        "bar",
        &[
            "barres",
            "barre",
            "bar",
            "bars",
            "histogramme",
            "histogram",
            "colonnes",
            "columns",
        ],
    ),
    (
        "chart_type",
        "line",
        &["courbe", "ligne", "lignes", "line", "evolution", "trend"],
    ),
    (
        "chart_type",
        "pie",
        &["camembert", "circulaire", "secteurs", "pie", "donut"],
    ),
];

/// Words that mark French or English text, for language detection.
const FRENCH_MARKERS: &[&str] = &[
    "le",
    "la",
    "les",
    "un",
    "une",
    "des",
    "de",
    "du",
    "je",
    "tu",
    "vous",
    "nous",
    "avec",
    "pour",
    "et",
    "est",
    "mon",
    "ma",
    "mes",
    "votre",
    "sur",
    "dans",
    "moi",
    "creer",
    "cree",
    "ajoute",
    "formulaire",
    "bonjour",
    "merci",
    "veux",
    "voudrais",
    "tableau",
    "bord",
    "au",
    "aux",
    "qui",
    "que",
    "quoi",
    "comment",
    "pourquoi",
    "oui",
    "non",
];
const ENGLISH_MARKERS: &[&str] = &[
    "the", "a", "an", "with", "for", "and", "is", "my", "your", "on", "in", "me", "create", "add",
    "form", "hello", "please", "want", "need", "build", "make", "of", "to", "i", "what", "how",
    "why", "yes", "no", "thanks", "show",
];

/// Lowercases, strips accents and turns punctuation (including apostrophes) into spaces, so that
/// "Je veux créer un formulaire d'inscription !" becomes "je veux creer un formulaire d inscription".
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    normalize_into(text, &mut out);
    out
}

/// [`normalize`], appended to `out`: words separated by one space, none before or after.
fn normalize_into(text: &str, out: &mut String) {
    let start = out.len();
    // Whether a separator is due before the next letter (never before the first one).
    let mut gap = false;
    for ch in text.chars().flat_map(char::to_lowercase) {
        let mut utf8 = [0; 4];
        let letters: &str = match ch {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => "a",
            'ç' => "c",
            'è' | 'é' | 'ê' | 'ë' => "e",
            'ì' | 'í' | 'î' | 'ï' => "i",
            'ñ' => "n",
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' => "o",
            'ù' | 'ú' | 'û' | 'ü' => "u",
            'ý' | 'ÿ' => "y",
            'œ' => "oe",
            'æ' => "ae",
            c if c.is_alphanumeric() => c.encode_utf8(&mut utf8),
            _ => {
                gap = true;
                continue;
            }
        };
        if gap && out.len() > start {
            out.push(' ');
        }
        gap = false;
        out.push_str(letters);
    }
}

/// What a phrase of the [`Vocabulary`] is evidence of.
#[derive(Debug, Clone, Copy)]
enum Meaning {
    /// An object keyword of an intent, with its weight.
    Object(Intent, f32),
    /// A phrase of the entity at this index of [`ENTITY_PATTERNS`].
    Entity(usize),
    Action,
    French,
    English,
}

/// Every phrase the classifier looks for, in one automaton, so that a text is scanned once whatever their
/// number (a substring search per phrase cost ~3.6 µs a request).
struct Vocabulary {
    automaton: aho_corasick::AhoCorasick,
    /// By pattern id; a phrase can mean several things ("inscription": a form keyword and a registration).
    meanings: Vec<Vec<Meaning>>,
}

static VOCABULARY: std::sync::LazyLock<Vocabulary> = std::sync::LazyLock::new(|| {
    let mut phrases: Vec<&'static str> = Vec::new();
    let mut meanings: Vec<Vec<Meaning>> = Vec::new();
    let mut add = |phrase: &'static str, meaning: Meaning| {
        let id = match phrases.iter().position(|known| *known == phrase) {
            Some(id) => id,
            None => {
                phrases.push(phrase);
                meanings.push(Vec::new());
                phrases.len() - 1
            }
        };
        meanings[id].push(meaning);
    };
    for intent in ALL_INTENTS {
        for pattern in intent_patterns(intent) {
            add(pattern.phrase, Meaning::Object(intent, pattern.weight));
        }
    }
    for (index, (_, _, entity_phrases)) in ENTITY_PATTERNS.iter().enumerate() {
        for phrase in *entity_phrases {
            add(phrase, Meaning::Entity(index));
        }
    }
    for word in ACTIONS {
        add(word, Meaning::Action);
    }
    for word in FRENCH_MARKERS {
        add(word, Meaning::French);
    }
    for word in ENGLISH_MARKERS {
        add(word, Meaning::English);
    }
    let automaton = aho_corasick::AhoCorasick::new(&phrases)
        .expect("the classifier's phrases are a few hundred short strings");
    Vocabulary {
        automaton,
        meanings,
    }
});

/// The evidence the [`Vocabulary`] finds in a text.
struct Evidence {
    /// By pattern id: whether the phrase occurs (as whole words).
    found: Vec<bool>,
    french_markers: usize,
    english_markers: usize,
}

impl Evidence {
    /// Scans `padded`, a normalised text with one space before and after, for whole-word phrases.
    fn scan(padded: &str) -> Evidence {
        let vocabulary = &*VOCABULARY;
        let mut evidence = Evidence {
            found: vec![false; vocabulary.meanings.len()],
            french_markers: 0,
            english_markers: 0,
        };
        let bytes = padded.as_bytes();
        for found in vocabulary.automaton.find_overlapping_iter(padded) {
            let whole_words = found.start().checked_sub(1).map(|before| bytes[before])
                == Some(b' ')
                && bytes.get(found.end()) == Some(&b' ');
            if !whole_words {
                continue;
            }
            let id = found.pattern().as_usize();
            evidence.found[id] = true;
            // Markers count every occurrence; the rest only whether they occur.
            for meaning in &vocabulary.meanings[id] {
                match meaning {
                    Meaning::French => evidence.french_markers += 1,
                    Meaning::English => evidence.english_markers += 1,
                    _ => {}
                }
            }
        }
        evidence
    }

    /// The meanings of the phrases found, each phrase once.
    fn meanings(&self) -> impl Iterator<Item = Meaning> + '_ {
        self.found
            .iter()
            .zip(&VOCABULARY.meanings)
            .filter(|(found, _)| **found)
            .flat_map(|(_, meanings)| meanings.iter().copied())
    }

    /// The language the markers and `accents` (accented letters in the original text) point to; `None`
    /// when the evidence is even.
    fn language(&self, accents: usize) -> Option<Language> {
        let french = accents * 2 + self.french_markers;
        match french.cmp(&self.english_markers) {
            std::cmp::Ordering::Greater => Some(Language::Fr),
            std::cmp::Ordering::Less => Some(Language::En),
            std::cmp::Ordering::Equal => None,
        }
    }
}

/// `text` normalised, with one space before and after, so that every word of it is between spaces.
fn padded(text: &str) -> String {
    let mut padded = String::with_capacity(text.len() + 2);
    padded.push(' ');
    normalize_into(text, &mut padded);
    padded.push(' ');
    padded
}

fn accents(text: &str) -> usize {
    text.chars()
        .filter(|c| "àâçéèêëîïôùûüœÀÂÇÉÈÊËÎÏÔÙÛÜŒ".contains(*c))
        .count()
}

/// Guesses the language from marker words and accented letters; `None` when the evidence is even.
pub fn detect_language(text: &str) -> Option<Language> {
    Evidence::scan(&padded(text)).language(accents(text))
}

/// Keyword evidence an intent needs: one strong keyword ("formulaire") or several weak ones.
const MIN_OBJECT_SCORE: f32 = 0.6;

/// Confidence below which a verdict is treated as [`Intent::Unknown`].
pub const MIN_CONFIDENCE: f32 = 0.5;

/// Classifies one request.
pub fn classify(text: &str) -> Analysis {
    let evidence = Evidence::scan(&padded(text));
    let detected_language = evidence.language(accents(text));

    let mut has_action = false;
    let mut scores = [0.0f32; ALL_INTENTS.len()];
    for meaning in evidence.meanings() {
        match meaning {
            Meaning::Object(intent, weight) => scores[intent as usize] += weight,
            Meaning::Action => has_action = true,
            _ => {}
        }
    }
    let mut best = (Intent::Unknown, 0.0f32);
    for intent in ALL_INTENTS {
        let score = scores[intent as usize];
        if score > best.1 {
            best = (intent, score);
        }
    }
    let (intent, score) = best;

    // An object keyword is the evidence; an action verb makes it a request. Weak keywords alone
    // ("champs", "liens") are not enough to act on.
    let strength = score.min(1.0);
    let confidence = if intent == Intent::Unknown {
        if has_action { 0.3 } else { 0.1 }
    } else {
        0.55 + 0.25 * strength + if has_action { 0.15 } else { 0.0 }
    };
    if intent == Intent::Unknown || score < MIN_OBJECT_SCORE {
        return Analysis {
            intent: Intent::Unknown,
            entities: Vec::new(),
            confidence: confidence.min(0.4),
            detected_language,
        };
    }

    let mut entities = Vec::new();
    let wanted_kind = match intent {
        Intent::CreateForm => Some("form_type"),
        Intent::CreateChart | Intent::CreateDashboard => Some("chart_type"),
        _ => None,
    };
    if let Some(kind) = wanted_kind {
        // The first matching value of the wanted kind wins, in table order (contact before registration).
        let matched: Vec<usize> = evidence
            .meanings()
            .filter_map(|meaning| match meaning {
                Meaning::Entity(index) => Some(index),
                _ => None,
            })
            .collect();
        if let Some((kind, value, _)) = ENTITY_PATTERNS
            .iter()
            .enumerate()
            .find(|(index, (entity_kind, _, _))| *entity_kind == kind && matched.contains(index))
            .map(|(_, entity)| entity)
        {
            entities.push(Entity {
                kind: (*kind).to_owned(),
                value: (*value).to_owned(),
            });
        }
    }

    Analysis {
        intent,
        entities,
        confidence: round2(confidence.min(0.99)),
        detected_language,
    }
}

fn round2(value: f32) -> f32 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, intent: Intent, entity: Option<(&str, &str)>) {
        let analysis = classify(text);
        assert_eq!(analysis.intent, intent, "{text}: {analysis:?}");
        match entity {
            Some((kind, value)) => {
                assert_eq!(analysis.entity(kind), Some(value), "{text}: {analysis:?}")
            }
            None => assert!(analysis.entities.is_empty(), "{text}: {analysis:?}"),
        }
        if intent == Intent::Unknown {
            assert!(analysis.confidence < MIN_CONFIDENCE, "{text}: {analysis:?}");
        } else {
            assert!(analysis.confidence >= 0.7, "{text}: {analysis:?}");
        }
    }

    #[test]
    fn seed_examples() {
        check(
            "Créer un formulaire de contact",
            Intent::CreateForm,
            Some(("form_type", "contact")),
        );
        check(
            "Je veux créer un formulaire d'inscription",
            Intent::CreateForm,
            Some(("form_type", "registration")),
        );
        check(
            "Ajoute un menu de navigation",
            Intent::CreateNavigation,
            None,
        );
        check(
            "Crée un tableau de bord avec des statistiques",
            Intent::CreateDashboard,
            None,
        );
    }

    #[test]
    fn english_accents_and_case() {
        check(
            "Please create a contact form",
            Intent::CreateForm,
            Some(("form_type", "contact")),
        );
        check(
            "Add a sign up form",
            Intent::CreateForm,
            Some(("form_type", "registration")),
        );
        check(
            "CREER UN FORMULAIRE DE CONNEXION",
            Intent::CreateForm,
            Some(("form_type", "login")),
        );
        check(
            "creer un formulaire d’inscription",
            Intent::CreateForm,
            Some(("form_type", "registration")),
        );
        check("Build me a dashboard", Intent::CreateDashboard, None);
        check("Add a navigation menu", Intent::CreateNavigation, None);
        check(
            "Affiche un graphique en camembert",
            Intent::CreateChart,
            Some(("chart_type", "pie")),
        );
        check("Ajoute un bouton", Intent::CreateButton, None);
    }

    #[test]
    fn other_requests_are_unknown() {
        check("Quel temps fait-il à Paris ?", Intent::Unknown, None);
        check("Bonjour", Intent::Unknown, None);
        check("", Intent::Unknown, None);
        check("Je veux des champs", Intent::Unknown, None);
        // "formulaires" inside another word must not match.
        check("transformation digitale", Intent::Unknown, None);
    }

    #[test]
    fn language_detection() {
        assert_eq!(
            detect_language("Créer un formulaire de contact"),
            Some(Language::Fr)
        );
        assert_eq!(
            detect_language("Please create a contact form"),
            Some(Language::En)
        );
        assert_eq!(detect_language("xyz"), None);
        assert_eq!(Language::from_preference("fr-FR"), Some(Language::Fr));
        assert_eq!(Language::from_preference("English"), Some(Language::En));
        assert_eq!(Language::from_preference("de"), None);
    }

    #[test]
    fn normalization() {
        assert_eq!(
            normalize("  Je VEUX créer\tun formulaire d'inscription !"),
            "je veux creer un formulaire d inscription"
        );
        assert_eq!(normalize("Œuvre"), "oeuvre");
    }
}
