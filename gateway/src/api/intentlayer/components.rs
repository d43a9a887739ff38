//! The UI component generator of the IntentLayer surface (seed 000): from an [`Analysis`] to typed
//! `ui_components` and the spoken `response_text`.
//!
//! The wire shape is the seed's: `{"type": "form", "props": {"fields": [{"name", "type", "label"}]}}`.
//! Props beyond the seed's (a form's `title` and `submit_label`, a field's `required`) are additive.
//! Dashboards and charts carry sample data marked `"sample": true`: the front-end binds real data.

use serde::Serialize;

use super::classifier::{Analysis, Intent, Language};

/// One UI component, serialised as `{"type": "<kind>", "props": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "props", rename_all = "snake_case")]
pub enum UiComponent {
    /// A form.
    Form(FormProps),
    /// A button.
    Button(ButtonProps),
    /// A card showing one value or a short text.
    Card(CardProps),
    /// A navigation menu.
    Navigation(NavigationProps),
    /// A chart.
    Chart(ChartProps),
    /// A container arranging other components.
    Layout(LayoutProps),
}

impl UiComponent {
    /// The wire name of the component type.
    pub fn kind(&self) -> &'static str {
        match self {
            UiComponent::Form(_) => "form",
            UiComponent::Button(_) => "button",
            UiComponent::Card(_) => "card",
            UiComponent::Navigation(_) => "navigation",
            UiComponent::Chart(_) => "chart",
            UiComponent::Layout(_) => "layout",
        }
    }
}

/// Props of a form.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FormProps {
    /// Heading shown above the form.
    pub title: String,
    /// The fields, in display order.
    pub fields: Vec<FormField>,
    /// Text of the submit button.
    pub submit_label: String,
}

/// One form field: `{"name": "email", "type": "email", "label": "Email"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FormField {
    /// The field's key in the submitted data.
    pub name: String,
    /// HTML input type (`text`, `email`, `password`, `textarea`, `number`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The label shown to the user.
    pub label: String,
    /// Whether the field must be filled.
    pub required: bool,
}

/// Props of a button.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ButtonProps {
    /// The button text.
    pub label: String,
    /// Visual variant (`primary`, `secondary`).
    pub variant: String,
    /// What the button does (`submit`, `navigate`).
    pub action: String,
}

/// Props of a card.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CardProps {
    /// The card title.
    pub title: String,
    /// A headline value (metrics), when the card shows one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A short text, when the card shows one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Whether the value is placeholder data for the front-end to replace.
    pub sample: bool,
}

/// Props of a navigation menu.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NavigationProps {
    /// The links, in display order.
    pub links: Vec<NavigationLink>,
    /// `horizontal` (a top bar) or `vertical` (a sidebar).
    pub orientation: String,
}

/// One navigation link.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NavigationLink {
    /// The link text.
    pub label: String,
    /// The target path.
    pub href: String,
}

/// Props of a chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChartProps {
    /// `bar`, `line` or `pie`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The chart title.
    pub title: String,
    /// Chart.js-style data: labels and datasets.
    pub data: ChartData,
    /// Whether the data is placeholder data for the front-end to replace.
    pub sample: bool,
}

/// Chart data: one label per point and one or more series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChartData {
    /// The x-axis (or slice) labels.
    pub labels: Vec<String>,
    /// The series.
    pub datasets: Vec<ChartDataset>,
}

/// One series of a chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChartDataset {
    /// The series name.
    pub label: String,
    /// One value per label.
    pub data: Vec<f64>,
}

/// Props of a layout container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayoutProps {
    /// `grid`, `row` or `column`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Number of grid columns.
    pub columns: u32,
    /// The components laid out, in order.
    pub children: Vec<UiComponent>,
}

fn field(name: &str, kind: &str, label: &str) -> FormField {
    FormField {
        name: name.to_owned(),
        kind: kind.to_owned(),
        label: label.to_owned(),
        required: true,
    }
}

fn tr(language: Language, fr: &str, en: &str) -> String {
    match language {
        Language::Fr => fr.to_owned(),
        Language::En => en.to_owned(),
    }
}

/// The fields of a form of `form_type` (`None`: a generic form).
fn form_fields(form_type: Option<&str>, language: Language) -> Vec<FormField> {
    let name = || field("name", "text", &tr(language, "Nom", "Name"));
    let email = || field("email", "email", "Email");
    let password = || {
        field(
            "password",
            "password",
            &tr(language, "Mot de passe", "Password"),
        )
    };
    let message = || field("message", "textarea", "Message");
    match form_type {
        Some("registration") => vec![name(), email(), password()],
        Some("login") => vec![email(), password()],
        Some("newsletter") => vec![email()],
        Some("feedback") => vec![
            name(),
            email(),
            field("rating", "number", &tr(language, "Note", "Rating")),
            FormField {
                required: false,
                ..message()
            },
        ],
        // Contact, and the generic form, are the seed's example.
        _ => vec![name(), email(), message()],
    }
}

/// How a form type is named inside a sentence ("un formulaire de contact", "a contact form").
fn form_phrase(form_type: Option<&str>, language: Language) -> String {
    match (language, form_type) {
        (Language::Fr, Some("contact")) => "un formulaire de contact".into(),
        (Language::Fr, Some("registration")) => "un formulaire d'inscription".into(),
        (Language::Fr, Some("login")) => "un formulaire de connexion".into(),
        (Language::Fr, Some("newsletter")) => "un formulaire d'abonnement à la newsletter".into(),
        (Language::Fr, Some("feedback")) => "un formulaire d'avis".into(),
        (Language::Fr, _) => "un formulaire".into(),
        (Language::En, Some("contact")) => "a contact form".into(),
        (Language::En, Some("registration")) => "a registration form".into(),
        (Language::En, Some("login")) => "a login form".into(),
        (Language::En, Some("newsletter")) => "a newsletter subscription form".into(),
        (Language::En, Some("feedback")) => "a feedback form".into(),
        (Language::En, _) => "a form".into(),
    }
}

/// "nom, email et mot de passe" / "name, email and password".
fn join_labels(fields: &[FormField], language: Language) -> String {
    let labels: Vec<String> = fields.iter().map(|f| f.label.to_lowercase()).collect();
    let and = tr(language, "et", "and");
    match labels.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} {and} {last}", rest.join(", ")),
    }
}

fn navigation(language: Language, orientation: &str) -> UiComponent {
    let links = [
        ("Accueil", "Home", "/"),
        ("À propos", "About", "/about"),
        ("Services", "Services", "/services"),
        ("Contact", "Contact", "/contact"),
    ];
    UiComponent::Navigation(NavigationProps {
        links: links
            .iter()
            .map(|(fr, en, href)| NavigationLink {
                label: tr(language, fr, en),
                href: (*href).to_owned(),
            })
            .collect(),
        orientation: orientation.to_owned(),
    })
}

fn chart(language: Language, kind: &str) -> UiComponent {
    let (labels, data): (Vec<String>, Vec<f64>) = if kind == "pie" {
        (
            vec![
                tr(language, "Direct", "Direct"),
                tr(language, "Recherche", "Search"),
                tr(language, "Réseaux sociaux", "Social"),
            ],
            vec![45.0, 35.0, 20.0],
        )
    } else {
        let months = match language {
            Language::Fr => ["Jan", "Fév", "Mar", "Avr", "Mai", "Juin"],
            Language::En => ["Jan", "Feb", "Mar", "Apr", "May", "Jun"],
        };
        (
            months.iter().map(|m| (*m).to_owned()).collect(),
            vec![120.0, 150.0, 170.0, 160.0, 210.0, 240.0],
        )
    };
    UiComponent::Chart(ChartProps {
        kind: kind.to_owned(),
        title: tr(language, "Évolution", "Trend"),
        data: ChartData {
            labels,
            datasets: vec![ChartDataset {
                label: tr(language, "Visites", "Visits"),
                data,
            }],
        },
        sample: true,
    })
}

fn metric_card(title: String, value: &str) -> UiComponent {
    UiComponent::Card(CardProps {
        title,
        value: Some(value.to_owned()),
        content: None,
        sample: true,
    })
}

/// The components answering `analysis`, in display order. Empty for [`Intent::Unknown`].
pub fn components_for(analysis: &Analysis, language: Language) -> Vec<UiComponent> {
    match analysis.intent {
        Intent::CreateForm => {
            let form_type = analysis.entity("form_type");
            let fields = form_fields(form_type, language);
            // "un formulaire de contact" -> "Formulaire de contact".
            let phrase = form_phrase(form_type, language);
            let title = capitalize(
                phrase
                    .split_once(' ')
                    .map_or(phrase.as_str(), |(_, rest)| rest),
            );
            let submit_label = match (language, form_type) {
                (Language::Fr, Some("registration")) => "S'inscrire",
                (Language::Fr, Some("login")) => "Se connecter",
                (Language::Fr, _) => "Envoyer",
                (Language::En, Some("registration")) => "Sign up",
                (Language::En, Some("login")) => "Log in",
                (Language::En, _) => "Send",
            };
            vec![UiComponent::Form(FormProps {
                title,
                fields,
                submit_label: submit_label.to_owned(),
            })]
        }
        Intent::CreateNavigation => vec![navigation(language, "horizontal")],
        Intent::CreateDashboard => {
            // Every kind the seed names appears at the top level: a grid of metric cards, a chart of the
            // trend and a summary card.
            let chart_type = analysis.entity("chart_type").unwrap_or("line");
            vec![
                UiComponent::Layout(LayoutProps {
                    kind: "grid".into(),
                    columns: 3,
                    children: vec![
                        metric_card(tr(language, "Utilisateurs", "Users"), "1 250"),
                        metric_card(tr(language, "Revenus", "Revenue"), "8 400 €"),
                        metric_card(
                            tr(language, "Taux de conversion", "Conversion rate"),
                            "3,2 %",
                        ),
                    ],
                }),
                chart(language, chart_type),
                UiComponent::Card(CardProps {
                    title: tr(language, "Résumé", "Summary"),
                    value: None,
                    content: Some(tr(
                        language,
                        "Vos métriques principales en un coup d'œil.",
                        "Your key metrics at a glance.",
                    )),
                    sample: true,
                }),
            ]
        }
        Intent::CreateChart => vec![chart(
            language,
            analysis.entity("chart_type").unwrap_or("bar"),
        )],
        Intent::CreateCard => vec![UiComponent::Card(CardProps {
            title: tr(language, "Titre", "Title"),
            value: None,
            content: Some(tr(language, "Contenu de la carte", "Card content")),
            sample: true,
        })],
        Intent::CreateButton => vec![UiComponent::Button(ButtonProps {
            label: tr(language, "Valider", "Submit"),
            variant: "primary".into(),
            action: "submit".into(),
        })],
        Intent::Unknown => Vec::new(),
    }
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The sentence answering `analysis` (it is also what the audio says), like the seed's examples:
/// "J'ai créé un formulaire d'inscription avec les champs nom, email et mot de passe".
pub fn response_text(
    analysis: &Analysis,
    components: &[UiComponent],
    language: Language,
) -> String {
    match analysis.intent {
        Intent::CreateForm => {
            let form_type = analysis.entity("form_type");
            let fields = match components.first() {
                Some(UiComponent::Form(form)) => join_labels(&form.fields, language),
                _ => String::new(),
            };
            match language {
                Language::Fr => format!(
                    "J'ai créé {} avec les champs {fields}.",
                    form_phrase(form_type, language)
                ),
                Language::En => format!(
                    "I created {} with the fields {fields}.",
                    form_phrase(form_type, language)
                ),
            }
        }
        Intent::CreateNavigation => tr(
            language,
            "Voici un menu de navigation avec les sections principales de votre site.",
            "Here is a navigation menu with the main sections of your site.",
        ),
        Intent::CreateDashboard => tr(
            language,
            "J'ai créé un tableau de bord avec vos métriques principales.",
            "I created a dashboard with your key metrics.",
        ),
        Intent::CreateChart => tr(
            language,
            "J'ai créé un graphique pour vos données.",
            "I created a chart for your data.",
        ),
        Intent::CreateCard => tr(language, "J'ai créé une carte.", "I created a card."),
        Intent::CreateButton => tr(language, "J'ai ajouté un bouton.", "I added a button."),
        Intent::Unknown => tr(
            language,
            "Je n'ai pas compris votre demande. Je peux créer un formulaire, un menu de navigation, un tableau de bord, un graphique, une carte ou un bouton.",
            "I did not understand your request. I can create a form, a navigation menu, a dashboard, a chart, a card or a button.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::classifier::classify;
    use super::*;

    #[test]
    fn contact_form_matches_the_seed() {
        let analysis = classify("Créer un formulaire de contact");
        let components = components_for(&analysis, Language::Fr);
        let json = serde_json::to_value(&components).unwrap();
        assert_eq!(json[0]["type"], "form");
        let fields = &json[0]["props"]["fields"];
        assert_eq!(fields[0]["name"], "name");
        assert_eq!(fields[0]["type"], "text");
        assert_eq!(fields[0]["label"], "Nom");
        assert_eq!(fields[1]["name"], "email");
        assert_eq!(fields[1]["type"], "email");
        assert_eq!(fields[2]["name"], "message");
        assert_eq!(fields[2]["type"], "textarea");
        assert_eq!(
            response_text(&analysis, &components, Language::Fr),
            "J'ai créé un formulaire de contact avec les champs nom, email et message."
        );
    }

    #[test]
    fn registration_sentence_matches_the_seed_audio() {
        let analysis = classify("Je veux créer un formulaire d'inscription");
        let components = components_for(&analysis, Language::Fr);
        assert_eq!(
            response_text(&analysis, &components, Language::Fr),
            "J'ai créé un formulaire d'inscription avec les champs nom, email et mot de passe."
        );
        let en = components_for(&analysis, Language::En);
        assert_eq!(
            response_text(&analysis, &en, Language::En),
            "I created a registration form with the fields name, email and password."
        );
    }

    #[test]
    fn dashboard_has_card_chart_and_layout_at_top_level() {
        let analysis = classify("Crée un tableau de bord avec des statistiques");
        let kinds: Vec<&str> = components_for(&analysis, Language::Fr)
            .iter()
            .map(UiComponent::kind)
            .collect();
        assert_eq!(kinds, ["layout", "chart", "card"]);
        let json = serde_json::to_value(components_for(&analysis, Language::Fr)).unwrap();
        assert_eq!(json[0]["props"]["type"], "grid");
        assert_eq!(json[0]["props"]["children"][0]["type"], "card");
        assert_eq!(json[1]["props"]["type"], "line");
        assert!(json[1]["props"]["data"]["labels"].is_array());
    }

    #[test]
    fn unknown_has_no_components() {
        let analysis = classify("Quelle heure est-il ?");
        assert!(components_for(&analysis, Language::Fr).is_empty());
    }
}
