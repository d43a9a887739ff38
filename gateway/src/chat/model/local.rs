//! The built-in text engine, `voxgate-local`: deterministic answers grounded in what the gateway knows.
//!
//! It composes its answer from, in order of preference:
//! 1. the retrieved document chunks in [`ChatRequest::context`] (best first): it quotes the sentences of the best
//!    chunk that share the most terms with the question, and names the document;
//! 2. the conversation history: asked about something said earlier ("what did I say…", "tout à l'heure…"), it
//!    quotes the earlier user turn that matches best; a question that shares terms with an earlier turn is linked
//!    to it;
//! 3. otherwise a short reply that says which keywords it understood.
//!
//! It answers in French when the question reads as French, in English otherwise. The same request always gives
//! the same answer, streamed in groups of a few words; token counts use [`retrieval::count_tokens`].

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, StreamExt};

use super::{
    ChatRequest, ContextChunk, ModelError, ModelEvent, ModelKind, TextModel, Usage, retrieval,
};
use crate::chat::domain::Role;

/// Words per streamed chunk.
const WORDS_PER_CHUNK: usize = 4;
/// Longest quoted excerpt, in characters.
const MAX_EXCERPT_CHARS: usize = 400;

/// The built-in engine.
#[derive(Debug, Clone, Default)]
pub struct LocalModel {
    /// Pause between streamed chunks, to look like a model on screen; zero in tests.
    chunk_delay: Duration,
}

impl LocalModel {
    pub const NAME: &'static str = "voxgate-local";

    /// An engine that streams without pauses.
    pub fn new() -> Self {
        LocalModel::default()
    }

    /// An engine that waits `delay` between streamed chunks.
    pub fn with_chunk_delay(delay: Duration) -> Self {
        LocalModel { chunk_delay: delay }
    }

    /// The whole answer to `request`.
    pub fn answer(&self, request: &ChatRequest) -> Result<String, ModelError> {
        let question = request
            .last_user_message()
            .ok_or_else(|| ModelError::InvalidRequest("no user message to answer".to_owned()))?;
        let lang = Lang::detect(question);
        let terms = retrieval::terms(question);
        let mut parts: Vec<String> = Vec::new();

        // Earlier user turns, most recent first, without the question itself.
        let mut earlier: Vec<&str> = request
            .messages
            .iter()
            .filter(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .collect();
        earlier.pop();
        earlier.reverse();

        if asks_about_the_past(question) && !earlier.is_empty() {
            let topic: Vec<String> = terms
                .iter()
                .filter(|t| !is_memory_word(t))
                .cloned()
                .collect();
            let quoted = best_overlap(&earlier, &topic).unwrap_or(earlier[0]);
            parts.push(match lang {
                Lang::Fr => format!("Vous m'avez dit plus tôt : « {} ».", excerpt(quoted)),
                Lang::En => format!("Earlier you said: \u{201c}{}\u{201d}.", excerpt(quoted)),
            });
        }

        if let Some(best) = request.context.first() {
            parts.push(cite(best, &terms, lang, true));
            if let Some(second) = request
                .context
                .iter()
                .skip(1)
                .find(|c| c.document_id != best.document_id && c.score >= best.score * 0.5)
            {
                parts.push(cite(second, &terms, lang, false));
            }
        } else if parts.is_empty() {
            if is_greeting(question) {
                parts.push(match lang {
                    Lang::Fr => "Bonjour ! Je suis l'assistant intégré de voxgate. Posez-moi une question, ou \
                                 ajoutez des documents pour que je réponde à partir de leur contenu."
                        .to_owned(),
                    Lang::En => "Hello! I am voxgate's built-in assistant. Ask me a question, or add documents so \
                                 that I can answer from their content."
                        .to_owned(),
                });
            } else {
                let keywords = unique(&terms, 5);
                parts.push(match (lang, keywords.is_empty()) {
                    (Lang::Fr, false) => format!(
                        "J'ai compris que votre message porte sur : {}. Je n'ai pas de document sur ce sujet ; \
                         ajoutez-en un pour que je puisse répondre précisément.",
                        keywords.join(", ")
                    ),
                    (Lang::Fr, true) => {
                        "Je n'ai pas compris votre demande. Pouvez-vous la reformuler ?".to_owned()
                    }
                    (Lang::En, false) => format!(
                        "I understood that your message is about: {}. I have no document on this topic yet; add \
                         one so that I can answer precisely.",
                        keywords.join(", ")
                    ),
                    (Lang::En, true) => "I did not understand your request. Could you rephrase it?".to_owned(),
                });
            }
        }

        if !asks_about_the_past(question)
            && let Some(previous) = best_overlap(&earlier, &terms)
        {
            parts.push(match lang {
                Lang::Fr => format!(
                    "Cela rejoint votre message précédent : « {} ».",
                    excerpt(previous)
                ),
                Lang::En => format!(
                    "This follows up on your earlier message: \u{201c}{}\u{201d}.",
                    excerpt(previous)
                ),
            });
        }

        let text = parts.join(" ");
        if request.json {
            let keywords = unique(&terms, 5);
            return Ok(serde_json::json!({ "answer": text, "keywords": keywords }).to_string());
        }
        Ok(text)
    }
}

impl TextModel for LocalModel {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn kind(&self) -> ModelKind {
        ModelKind::Local
    }

    fn stream(&self, request: ChatRequest) -> BoxStream<'static, Result<ModelEvent, ModelError>> {
        let answer = match self.answer(&request) {
            Ok(answer) => answer,
            Err(e) => return futures_util::stream::once(async move { Err(e) }).boxed(),
        };
        let usage = Usage {
            prompt_tokens: super::estimate_prompt_tokens(&request),
            completion_tokens: retrieval::count_tokens(&answer),
            estimated: false,
        };
        let mut events: VecDeque<ModelEvent> = split_words(&answer, WORDS_PER_CHUNK)
            .into_iter()
            .map(ModelEvent::Delta)
            .collect();
        events.push_back(ModelEvent::Done(usage));
        let delay = self.chunk_delay;
        futures_util::stream::unfold((events, true), move |(mut events, first)| async move {
            let event = events.pop_front()?;
            if !first && !delay.is_zero() && matches!(event, ModelEvent::Delta(_)) {
                tokio::time::sleep(delay).await;
            }
            Some((Ok(event), (events, false)))
        })
        .boxed()
    }

    fn check(&self) -> BoxFuture<'static, Result<Vec<String>, ModelError>> {
        Box::pin(async { Ok(vec![Self::NAME.to_owned()]) })
    }
}

/// Splits `text` into pieces of `n` words each, keeping the whitespace, so the pieces concatenate to `text`.
pub fn split_words(text: &str, n: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut words = 0;
    let mut in_word = false;
    for c in text.chars() {
        let space = c.is_whitespace();
        if !space && !in_word {
            if words == n {
                pieces.push(std::mem::take(&mut current));
                words = 0;
            }
            words += 1;
        }
        in_word = !space;
        current.push(c);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Fr,
    En,
}

impl Lang {
    fn detect(text: &str) -> Lang {
        const FR: &[&str] = &[
            "le", "la", "les", "des", "une", "est", "et", "je", "vous", "pour", "que", "qui",
            "dans", "sur", "avec", "bonjour", "merci", "quel", "quelle", "pas", "du", "au", "mon",
            "ma", "mes", "un", "moi", "comment",
        ];
        const EN: &[&str] = &[
            "the", "a", "an", "is", "are", "and", "i", "you", "for", "that", "what", "which", "in",
            "on", "with", "hello", "thanks", "how", "my", "me", "it", "of", "to", "do", "does",
            "can",
        ];
        let words = retrieval::words(text);
        let fr = words.iter().filter(|w| FR.contains(&w.as_str())).count();
        let en = words.iter().filter(|w| EN.contains(&w.as_str())).count();
        let accents = text.chars().any(|c| "éèêàçùâîôœ".contains(c));
        if fr > en || (fr == en && accents) {
            Lang::Fr
        } else {
            Lang::En
        }
    }
}

fn is_greeting(text: &str) -> bool {
    let words = retrieval::words(text);
    words.len() <= 4
        && words.iter().any(|w| {
            matches!(
                w.as_str(),
                "hello" | "hi" | "hey" | "bonjour" | "salut" | "bonsoir"
            )
        })
}

fn is_memory_word(term: &str) -> bool {
    matches!(
        term,
        "said"
            | "say"
            | "earlier"
            | "before"
            | "previously"
            | "remember"
            | "told"
            | "mentioned"
            | "dit"
            | "dis"
            | "plus"
            | "tot"
            | "precedemment"
            | "rappelle"
            | "rappeler"
            | "souviens"
            | "avant"
            | "tout"
            | "heure"
            | "mentionne"
            | "interests"
            | "again"
    )
}

fn asks_about_the_past(question: &str) -> bool {
    let q = retrieval::words(question).join(" ");
    const CUES: &[&str] = &[
        "did i say",
        "did i tell",
        "i said",
        "i told",
        "earlier",
        "remember",
        "previously",
        "i mentioned",
        "j ai dit",
        "ai je dit",
        "tout a l heure",
        "plus tot",
        "precedemment",
        "te souviens",
        "vous souvenez",
        "rappelle moi",
        "rappelez moi",
    ];
    CUES.iter().any(|cue| q.contains(cue))
}

/// The text among `candidates` sharing the most terms with `terms` (at least one); earlier candidates win ties.
fn best_overlap<'a>(candidates: &[&'a str], terms: &[String]) -> Option<&'a str> {
    let wanted: HashSet<&str> = terms.iter().map(String::as_str).collect();
    let mut best: Option<(&str, usize)> = None;
    for &candidate in candidates {
        let have: HashSet<String> = retrieval::terms(candidate).into_iter().collect();
        let overlap = have.iter().filter(|t| wanted.contains(t.as_str())).count();
        if overlap > 0 && best.is_none_or(|(_, b)| overlap > b) {
            best = Some((candidate, overlap));
        }
    }
    best.map(|(text, _)| text)
}

fn cite(chunk: &ContextChunk, terms: &[String], lang: Lang, first: bool) -> String {
    let passage = best_sentences(&chunk.text, terms);
    match (lang, first) {
        (Lang::Fr, true) => format!("D'après « {} » : {}", chunk.title, passage),
        (Lang::Fr, false) => format!("Voir aussi « {} » : {}", chunk.title, passage),
        (Lang::En, true) => format!("According to \u{201c}{}\u{201d}: {}", chunk.title, passage),
        (Lang::En, false) => format!("See also \u{201c}{}\u{201d}: {}", chunk.title, passage),
    }
}

/// The one or two consecutive sentences of `text` that share the most terms with `terms`, capped in length.
fn best_sentences(text: &str, terms: &[String]) -> String {
    let sentences = split_sentences(text);
    let wanted: HashSet<&str> = terms.iter().map(String::as_str).collect();
    let score = |s: &str| {
        retrieval::terms(s)
            .iter()
            .filter(|t| wanted.contains(t.as_str()))
            .count()
    };
    let mut best = 0;
    let mut best_score = 0;
    for (i, s) in sentences.iter().enumerate() {
        let sc = score(s);
        if sc > best_score {
            best = i;
            best_score = sc;
        }
    }
    let mut passage = sentences
        .get(best)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    if let Some(next) = sentences.get(best + 1)
        && passage.chars().count() + next.chars().count() < MAX_EXCERPT_CHARS / 2
        && score(next) > 0
    {
        passage.push(' ');
        passage.push_str(next.trim());
    }
    excerpt(&passage)
}

fn split_sentences(text: &str) -> Vec<&str> {
    let mut sentences = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (i, &(pos, c)) in chars.iter().enumerate() {
        let end_of_sentence = matches!(c, '.' | '!' | '?' | '\n')
            && chars
                .get(i + 1)
                .is_none_or(|&(_, next)| next.is_whitespace());
        if end_of_sentence {
            let end = pos + c.len_utf8();
            let s = text[start..end].trim();
            if !s.is_empty() {
                sentences.push(s);
            }
            start = end;
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        sentences.push(rest);
    }
    sentences
}

/// `text` on one line, cut at a word boundary to [`MAX_EXCERPT_CHARS`] with an ellipsis.
fn excerpt(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= MAX_EXCERPT_CHARS {
        return flat;
    }
    let cut: String = flat.chars().take(MAX_EXCERPT_CHARS).collect();
    let cut = match cut.rfind(' ') {
        Some(i) => &cut[..i],
        None => &cut[..],
    };
    format!("{cut}…")
}

fn unique(terms: &[String], max: usize) -> Vec<String> {
    let mut seen = HashSet::new();
    terms
        .iter()
        .filter(|t| seen.insert(t.as_str()))
        .take(max)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::model::PromptMessage;

    fn ask(history: &[(Role, &str)], context: Vec<ContextChunk>) -> String {
        let request = ChatRequest {
            messages: history
                .iter()
                .map(|(r, t)| PromptMessage::new(*r, *t))
                .collect(),
            context,
            ..Default::default()
        };
        LocalModel::new().answer(&request).unwrap()
    }

    #[test]
    fn split_words_concatenates_back() {
        let text = "  one two  three four five\nsix seven ";
        let pieces = split_words(text, 2);
        assert_eq!(pieces.concat(), text);
        assert!(pieces.len() >= 4);
        assert!(split_words("", 3).is_empty());
    }

    #[test]
    fn cites_the_best_chunk_and_its_title() {
        let chunk = ContextChunk {
            document_id: "d1".into(),
            title: "Horaires".into(),
            text: "Le magasin est fermé le dimanche. Il ouvre à neuf heures du lundi au samedi."
                .into(),
            score: 2.0,
        };
        let answer = ask(
            &[(Role::User, "À quelle heure ouvre le magasin ?")],
            vec![chunk],
        );
        assert!(answer.starts_with("D'après « Horaires » :"), "{answer}");
        assert!(answer.contains("Il ouvre à neuf heures"), "{answer}");
    }

    #[test]
    fn recalls_the_earlier_user_turn() {
        let answer = ask(
            &[
                (Role::User, "My favorite color is blue and I love hiking"),
                (Role::Assistant, "Noted."),
                (Role::User, "The weather is nice today"),
                (Role::Assistant, "Indeed."),
                (Role::User, "What did I say about hiking?"),
            ],
            vec![],
        );
        assert!(
            answer.contains(
                "Earlier you said: \u{201c}My favorite color is blue and I love hiking\u{201d}"
            ),
            "{answer}"
        );
    }

    #[test]
    fn generic_reply_names_the_keywords() {
        let answer = ask(&[(Role::User, "Explain quantum entanglement")], vec![]);
        assert!(answer.contains("quantum, entanglement"), "{answer}");
        let answer = ask(&[(Role::User, "Bonjour")], vec![]);
        assert!(answer.starts_with("Bonjour !"), "{answer}");
    }

    #[test]
    fn no_user_message_is_an_error() {
        let request = ChatRequest {
            messages: vec![PromptMessage::new(Role::System, "x")],
            ..Default::default()
        };
        assert!(matches!(
            LocalModel::new().answer(&request),
            Err(ModelError::InvalidRequest(_))
        ));
    }
}
