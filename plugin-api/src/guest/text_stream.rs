//! Streaming detokenization for decoders: emit text as tokens are
//! generated without ever sending half a UTF-8 character, and say which
//! token ids each piece came from.
//!
//! Decoding token by token is wrong for byte-level and SentencePiece
//! vocabularies (a character can span tokens, and a token's leading space
//! depends on what precedes it), so [`TextStream`] decodes all generated
//! ids each step and emits the new suffix once it is stable: an extension
//! of what was already sent that does not end in U+FFFD (a partial
//! character). Each piece goes out with `progress::emit-token-ids`, carrying
//! the ids generated since the previous piece.

use crate::models::Tokenizer;
use crate::{progress, Error};

/// Streams the text of a growing list of generated ids (see the module).
pub struct TextStream<'a> {
    tokenizer: Option<&'a Tokenizer>,
    emitted: String,
    sent_ids: usize,
}

impl<'a> TextStream<'a> {
    /// A stream decoding with `tokenizer`; with `None` it emits nothing
    /// (a backend asked only for logits, say).
    pub fn new(tokenizer: Option<&'a Tokenizer>) -> Self {
        TextStream {
            tokenizer,
            emitted: String::new(),
            sent_ids: 0,
        }
    }

    /// Called after each step with every id generated so far: emits the
    /// new text, if it is stable.
    pub fn push(&mut self, ids: &[u32]) -> Result<(), Error> {
        let Some(tok) = self.tokenizer else {
            return Ok(());
        };
        let text = tok.decode(ids, true)?;
        if !text.ends_with('\u{FFFD}') {
            self.emit_suffix(&text, ids);
        }
        Ok(())
    }

    /// The full text of `ids`; emits whatever was held back, and the ids
    /// that added no text (an end-of-sequence token) with an empty piece,
    /// so the pieces' ids are every generated id.
    pub fn finish(mut self, ids: &[u32]) -> Result<String, Error> {
        let Some(tok) = self.tokenizer else {
            return Ok(String::new());
        };
        let text = tok.decode(ids, true)?;
        self.emit_suffix(&text, ids);
        if self.sent_ids < ids.len() {
            progress::emit_token_ids(&ids[self.sent_ids..], "");
        }
        Ok(text)
    }

    fn emit_suffix(&mut self, text: &str, ids: &[u32]) {
        if text.len() > self.emitted.len() && text.starts_with(self.emitted.as_str()) {
            let new_ids = ids.get(self.sent_ids..).unwrap_or_default();
            progress::emit_token_ids(new_ids, &text[self.emitted.len()..]);
            self.emitted = text.to_string();
            self.sent_ids = ids.len();
        }
    }
}
