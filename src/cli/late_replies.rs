//! Which line a datagram reply answers. UDP has no order and no
//! connection: a reply that arrives after its line gave up would
//! otherwise be taken for the answer to the line sent next. stamp and
//! echo send the line back inside their reply, so a reply that ends with
//! an earlier line is that line's, reported late; one that ends with no
//! line we sent (daytime, time, a reply template) answers the line now
//! waiting, as before.

use std::collections::VecDeque;

/// How many earlier lines are remembered, answered or not.
const REMEMBERED: usize = 64;

/// What a reply is to the line now waiting.
#[derive(Debug, PartialEq, Eq)]
pub enum Fit {
    /// Its answer.
    Ours,
    /// The answer to this earlier line, which gave up waiting.
    Late(Vec<u8>),
    /// A second answer to this earlier line (a resend's).
    Again(Vec<u8>),
}

#[derive(Debug, Default)]
pub struct History {
    unanswered: VecDeque<Vec<u8>>,
    answered: VecDeque<Vec<u8>>,
}

impl History {
    pub fn fit(&mut self, reply: &[u8], waiting: &[u8]) -> Fit {
        let answers = |line: &Vec<u8>| !line.is_empty() && reply.ends_with(line);
        if reply.ends_with(waiting) {
            return Fit::Ours;
        }
        if let Some(at) = self.unanswered.iter().position(answers) {
            let line = self.unanswered.remove(at).unwrap_or_default();
            self.remember(line.clone());
            return Fit::Late(line);
        }
        match self.answered.iter().find(|line| answers(line)) {
            Some(line) => Fit::Again(line.clone()),
            None => Fit::Ours,
        }
    }

    pub fn answered(&mut self, line: &[u8]) {
        self.remember(line.to_vec());
    }

    pub fn gave_up(&mut self, line: &[u8]) {
        if self.unanswered.len() == REMEMBERED {
            self.unanswered.pop_front();
        }
        self.unanswered.push_back(line.to_vec());
    }

    fn remember(&mut self, line: Vec<u8>) {
        if self.answered.len() == REMEMBERED {
            self.answered.pop_front();
        }
        self.answered.push_back(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_reply_is_its_own_lines_not_the_next() {
        let mut h = History::default();
        h.gave_up(b"one");
        assert_eq!(h.fit(b"[t] one", b"two"), Fit::Late(b"one".to_vec()));
        assert_eq!(h.fit(b"[t] two", b"two"), Fit::Ours);
        h.answered(b"two");
        assert_eq!(h.fit(b"[t] two", b"three"), Fit::Again(b"two".to_vec()));
        assert_eq!(h.fit(b"Thu Dec  3 14:00:00 2026\r\n", b"three"), Fit::Ours);
    }
}
