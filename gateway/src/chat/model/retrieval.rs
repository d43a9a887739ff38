//! Lexical retrieval: tokenisation, chunking and a BM25 index over document chunks.
//!
//! French and English text is lower-cased, stripped of the common Latin accents (so "modèle" matches "modele"),
//! split on anything that is not alphanumeric, and filtered of stopwords of both languages. Chunks are windows of
//! about [`CHUNK_CHARS`] characters that overlap by [`CHUNK_OVERLAP_CHARS`] and break at whitespace, so a sentence
//! cut by one window is whole in the next.

use std::collections::HashMap;

/// Target size of a chunk in characters.
pub const CHUNK_CHARS: usize = 500;
/// How much consecutive chunks share, in characters.
pub const CHUNK_OVERLAP_CHARS: usize = 100;

/// BM25 term-frequency saturation.
const K1: f64 = 1.2;
/// BM25 length normalisation.
const B: f64 = 0.75;

const STOPWORDS: &[&str] = &[
    // English
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be", "been",
    "but", "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have", "he",
    "her", "his", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "no", "not", "of",
    "on", "or", "our", "she", "so", "than", "that", "the", "their", "them", "then", "there",
    "these", "they", "this", "to", "up", "us", "was", "we", "were", "what", "when", "where",
    "which", "who", "why", "will", "with", "would", "you", "your", "please", "tell",
    // French (accents already stripped)
    "au", "aux", "avec", "ce", "ces", "cet", "cette", "dans", "de", "des", "du", "elle", "en",
    "est", "et", "etre", "eu", "il", "ils", "je", "la", "le", "les", "leur", "lui", "ma", "mais",
    "mes", "moi", "mon", "ne", "nos", "notre", "nous", "on", "ou", "par", "pas", "pour", "qu",
    "que", "qui", "sa", "se", "ses", "son", "sont", "sur", "ta", "te", "tes", "toi", "ton", "tu",
    "un", "une", "vos", "votre", "vous", "y", "l", "d", "j", "c", "n", "s", "t", "m", "quel",
    "quelle", "quels", "quelles", "est-ce", "comment", "donc", "ai", "as", "a", "sont", "ete",
    "peux", "pouvez", "veux", "voudrais", "moi",
];

fn is_stopword(token: &str) -> bool {
    STOPWORDS.contains(&token)
}

/// Folds one lower-case character to its unaccented ASCII form when it is a common Latin accented letter.
fn fold_accent(c: char) -> char {
    match c {
        'à' | 'â' | 'ä' | 'á' | 'ã' | 'å' => 'a',
        'ç' => 'c',
        'é' | 'è' | 'ê' | 'ë' => 'e',
        'î' | 'ï' | 'í' | 'ì' => 'i',
        'ô' | 'ö' | 'ó' | 'ò' | 'õ' => 'o',
        'ù' | 'û' | 'ü' | 'ú' => 'u',
        'ÿ' | 'ý' => 'y',
        'ñ' => 'n',
        other => other,
    }
}

/// Lower-cased, accent-folded alphanumeric words of `text`, stopwords included.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            current.push(fold_accent(c));
        } else if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The index terms of `text`: [`words`] without stopwords.
pub fn terms(text: &str) -> Vec<String> {
    words(text)
        .into_iter()
        .filter(|w| !is_stopword(w))
        .collect()
}

/// A rough token count for usage reporting: words plus punctuation marks.
pub fn count_tokens(text: &str) -> u32 {
    let mut count = 0u32;
    let mut in_word = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if !in_word {
                count = count.saturating_add(1);
                in_word = true;
            }
        } else {
            in_word = false;
            if !c.is_whitespace() {
                count = count.saturating_add(1);
            }
        }
    }
    count
}

/// Splits `text` into overlapping windows of about [`CHUNK_CHARS`] characters that break at whitespace.
/// Empty or whitespace-only text gives no chunk.
pub fn chunk_text(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut chunks = Vec::new();
    let mut start = 0;
    // Skip leading whitespace so no chunk starts blank.
    while start < chars.len() && chars[start].is_whitespace() {
        start += 1;
    }
    while start < chars.len() {
        let mut end = (start + CHUNK_CHARS).min(chars.len());
        if end < chars.len() {
            // Prefer to cut at the last whitespace in the second half of the window.
            if let Some(cut) = (start + CHUNK_CHARS / 2..end)
                .rev()
                .find(|&i| chars[i].is_whitespace())
            {
                end = cut;
            }
        }
        let chunk: String = chars[start..end].iter().collect();
        let trimmed = chunk.trim();
        if !trimmed.is_empty() {
            chunks.push(trimmed.to_string());
        }
        if end >= chars.len() {
            break;
        }
        // Step back by the overlap, then forward to a word start so chunks begin on a whole word.
        let mut next = end.saturating_sub(CHUNK_OVERLAP_CHARS).max(start + 1);
        while next < end && !chars[next - 1].is_whitespace() {
            next += 1;
        }
        while next < chars.len() && chars[next].is_whitespace() {
            next += 1;
        }
        start = next;
    }
    chunks
}

/// A BM25 index over a fixed list of texts (chunks), searched by free-text queries.
#[derive(Debug, Clone, Default)]
pub struct Bm25Index {
    /// Term -> (document index, term frequency) postings.
    postings: HashMap<String, Vec<(usize, u32)>>,
    lengths: Vec<u32>,
    average_length: f64,
}

/// One search result: the index of the text given to [`Bm25Index::build`] and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub index: usize,
    pub score: f64,
}

impl Bm25Index {
    /// Indexes `texts`; results refer to them by position.
    pub fn build<S: AsRef<str>>(texts: &[S]) -> Self {
        let mut postings: HashMap<String, Vec<(usize, u32)>> = HashMap::new();
        let mut lengths = Vec::with_capacity(texts.len());
        for (index, text) in texts.iter().enumerate() {
            let terms = terms(text.as_ref());
            lengths.push(u32::try_from(terms.len()).unwrap_or(u32::MAX));
            let mut frequencies: HashMap<String, u32> = HashMap::new();
            for term in terms {
                *frequencies.entry(term).or_default() += 1;
            }
            for (term, frequency) in frequencies {
                postings.entry(term).or_default().push((index, frequency));
            }
        }
        let total: f64 = lengths.iter().map(|&l| f64::from(l)).sum();
        let average_length = if lengths.is_empty() {
            0.0
        } else {
            total / lengths.len() as f64
        };
        Bm25Index {
            postings,
            lengths,
            average_length,
        }
    }

    /// Number of indexed texts.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// The best `limit` texts for `query`, best first; texts sharing no term with the query are not returned.
    /// Ties are broken by position so results are deterministic.
    pub fn search(&self, query: &str, limit: usize) -> Vec<Hit> {
        let n = self.lengths.len() as f64;
        let mut query_terms = terms(query);
        query_terms.sort();
        query_terms.dedup();
        let mut scores: HashMap<usize, f64> = HashMap::new();
        for term in &query_terms {
            let Some(postings) = self.postings.get(term) else {
                continue;
            };
            let df = postings.len() as f64;
            // The "plus one" form of IDF stays positive for terms present in most texts.
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for &(index, frequency) in postings {
                let tf = f64::from(frequency);
                let length = f64::from(self.lengths[index]);
                let norm = if self.average_length > 0.0 {
                    length / self.average_length
                } else {
                    1.0
                };
                let score = idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * norm));
                *scores.entry(index).or_default() += score;
            }
        }
        let mut hits: Vec<Hit> = scores
            .into_iter()
            .map(|(index, score)| Hit { index, score })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
        hits.truncate(limit);
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_fold_case_and_accents() {
        assert_eq!(
            words("Élève, MODÈLE: ça-va?"),
            ["eleve", "modele", "ca", "va"]
        );
    }

    #[test]
    fn terms_drop_stopwords_of_both_languages() {
        assert_eq!(
            terms("What is the capital of France"),
            ["capital", "france"]
        );
        assert_eq!(
            terms("Quelle est la capitale de la France"),
            ["capitale", "france"]
        );
    }

    #[test]
    fn token_count_counts_words_and_punctuation() {
        assert_eq!(count_tokens("Hello, world!"), 4);
        assert_eq!(count_tokens(""), 0);
    }

    #[test]
    fn chunks_cover_the_text_with_overlap() {
        let text: String = (0..400).map(|i| format!("word{i} ")).collect();
        let chunks = chunk_text(&text);
        assert!(chunks.len() > 1);
        for chunk in &chunks {
            assert!(chunk.chars().count() <= CHUNK_CHARS, "{}", chunk.len());
            assert!(
                chunk.starts_with("word"),
                "chunk starts mid-word: {chunk:.20}"
            );
        }
        // Every word appears in some chunk, and consecutive chunks share words.
        for i in 0..400 {
            let w = format!("word{i}");
            assert!(
                chunks.iter().any(|c| c.split(' ').any(|x| x == w)),
                "{w} lost"
            );
        }
        let first: Vec<&str> = chunks[0].split(' ').collect();
        assert!(chunks[1].split(' ').any(|w| first.contains(&w)));
        assert!(chunk_text("  \n ").is_empty());
        assert_eq!(chunk_text("short text"), ["short text"]);
    }

    #[test]
    fn bm25_ranks_the_matching_text_first() {
        let texts = [
            "The invoice must be paid within thirty days of receipt.",
            "Our office opens at nine in the morning and closes at six.",
            "Refunds are issued to the original payment method within five days.",
        ];
        let index = Bm25Index::build(&texts);
        let hits = index.search("When does the office open?", 3);
        assert_eq!(hits[0].index, 1);
        let hits = index.search("how are refunds issued", 3);
        assert_eq!(hits[0].index, 2);
        assert!(index.search("zebra", 3).is_empty());
    }
}
