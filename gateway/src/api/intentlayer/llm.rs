//! Intent analysis by the configured language model, with the rule-based classifier as the fallback.
//!
//! With `chat.llm_url` set, the model is asked for one JSON object
//! `{"intent", "entities": [{"type", "value"}], "confidence", "response_text"}`. Its answer is validated
//! strictly (known intent, typed entities, confidence in [0, 1], a non-empty text of bounded length); anything
//! else, or a model failure, falls back to [`classifier::classify`]. Without an LLM the classifier is used
//! directly.

use serde_json::Value;

use super::classifier::{self, ALL_INTENTS, Analysis, Entity, Intent, MIN_CONFIDENCE};
use crate::state::AppState;

/// Longest accepted `response_text` from the model, in characters.
const MAX_RESPONSE_CHARS: usize = 1000;

/// The analysis of one message, and the model's own answer text when it gave a valid one.
#[derive(Debug, Clone)]
pub(super) struct ModelAnalysis {
    pub(super) analysis: Analysis,
    pub(super) response_text: Option<String>,
}

fn system_prompt() -> String {
    let intents: Vec<&str> = ALL_INTENTS.iter().map(|intent| intent.as_str()).collect();
    format!(
        "You classify requests to a UI builder. Reply with ONE JSON object and nothing else: \
         {{\"intent\": one of {intents:?}, \"entities\": [{{\"type\": \"form_type\"|\"chart_type\", \"value\": string}}], \
         \"confidence\": number between 0 and 1, \"response_text\": a one-sentence answer in the language of the request}}. \
         form_type values: contact, registration, login, newsletter, feedback. chart_type values: bar, line, pie. \
         Use \"unknown\" with a confidence below 0.5 for anything that is not a request for a form, navigation menu, \
         dashboard, chart, card or button."
    )
}

/// Analyses `message` with the model when one is configured, else (or on any failure) with the rules.
pub(super) async fn analyze(state: &AppState, message: &str) -> ModelAnalysis {
    let rules = || ModelAnalysis {
        analysis: classifier::classify(message),
        response_text: None,
    };
    if state.config.chat.llm_url.is_none() {
        return rules();
    }
    match state
        .chat
        .complete_text(&system_prompt(), message, true)
        .await
    {
        Ok(reply) => match parse_model_reply(&reply, message) {
            Some(analysis) => analysis,
            None => {
                tracing::warn!(
                    "the model's intent analysis was not valid JSON of the expected shape; using the rules"
                );
                rules()
            }
        },
        Err(error) => {
            tracing::warn!(%error, "intent analysis by the model failed; using the rules");
            rules()
        }
    }
}

/// Validates the model's reply. `None` if it is not exactly the expected shape.
pub(super) fn parse_model_reply(reply: &str, message: &str) -> Option<ModelAnalysis> {
    // Models like to wrap JSON in a Markdown fence; take the outermost object.
    let start = reply.find('{')?;
    let end = reply.rfind('}')?;
    let value: Value = serde_json::from_str(reply.get(start..=end)?).ok()?;
    let object = value.as_object()?;
    let intent = Intent::parse(object.get("intent")?.as_str()?)?;
    let confidence = object.get("confidence")?.as_f64()?;
    if !(0.0..=1.0).contains(&confidence) {
        return None;
    }
    let mut entities = Vec::new();
    for entity in object
        .get("entities")
        .map(|e| e.as_array())
        .unwrap_or(Some(&Vec::new()))?
    {
        let entity = entity.as_object()?;
        let kind = entity.get("type")?.as_str()?;
        let value = entity.get("value")?.as_str()?;
        if kind.is_empty() || kind.len() > 64 || value.is_empty() || value.len() > 200 {
            return None;
        }
        entities.push(Entity {
            kind: kind.to_owned(),
            value: value.to_owned(),
        });
    }
    let response_text = object.get("response_text")?.as_str()?.trim();
    if response_text.is_empty() || response_text.chars().count() > MAX_RESPONSE_CHARS {
        return None;
    }
    // An unsure verdict is no verdict: the same rule as the classifier's.
    let confidence = confidence as f32;
    let (intent, entities, confidence) = if intent == Intent::Unknown || confidence < MIN_CONFIDENCE
    {
        (Intent::Unknown, Vec::new(), confidence.min(0.4))
    } else {
        (intent, entities, confidence)
    };
    Some(ModelAnalysis {
        analysis: Analysis {
            intent,
            entities,
            confidence,
            detected_language: classifier::detect_language(message),
        },
        response_text: Some(response_text.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_replies_are_taken() {
        let reply = "```json\n{\"intent\": \"create_form\", \"entities\": [{\"type\": \"form_type\", \"value\": \"contact\"}], \"confidence\": 0.9, \"response_text\": \"Voici un formulaire.\"}\n```";
        let parsed = parse_model_reply(reply, "Créer un formulaire de contact").unwrap();
        assert_eq!(parsed.analysis.intent, Intent::CreateForm);
        assert_eq!(parsed.analysis.entity("form_type"), Some("contact"));
        assert_eq!(
            parsed.response_text.as_deref(),
            Some("Voici un formulaire.")
        );
    }

    #[test]
    fn invalid_replies_are_refused() {
        for reply in [
            "not json",
            r#"{"intent": "launch_rocket", "entities": [], "confidence": 0.9, "response_text": "x"}"#,
            r#"{"intent": "create_form", "entities": [], "confidence": 1.5, "response_text": "x"}"#,
            r#"{"intent": "create_form", "entities": [{"type": 1, "value": "x"}], "confidence": 0.9, "response_text": "x"}"#,
            r#"{"intent": "create_form", "entities": [], "confidence": "high", "response_text": "x"}"#,
            r#"{"intent": "create_form", "entities": [], "confidence": 0.9, "response_text": ""}"#,
            r#"{"intent": "create_form", "entities": [], "confidence": 0.9}"#,
        ] {
            assert!(parse_model_reply(reply, "x").is_none(), "{reply}");
        }
    }

    #[test]
    fn unsure_verdicts_become_unknown() {
        let reply = r#"{"intent": "create_form", "entities": [{"type": "form_type", "value": "contact"}], "confidence": 0.3, "response_text": "Peut-être ?"}"#;
        let parsed = parse_model_reply(reply, "hmm").unwrap();
        assert_eq!(parsed.analysis.intent, Intent::Unknown);
        assert!(parsed.analysis.entities.is_empty());
        assert!(parsed.analysis.confidence < MIN_CONFIDENCE);
    }
}
