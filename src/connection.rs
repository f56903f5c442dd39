//! The sans-IO core of a stream connection: input in, replies out, with
//! the output budget and the input timers. It never touches a socket, so
//! any split of the input can be fed to it in a test, and every transport
//! drives the same code (`stream.rs`).

use std::time::{Duration, Instant, SystemTime};

use crate::context::{Config, Shared};
use crate::framing::Responder;
use crate::limits::Limits;
use crate::service::stamp::StampWriter;

/// Buffers grown past this are released once emptied, so a burst does not
/// pin memory on a connection that then goes idle.
const KEEP_CAPACITY: usize = 16 * 1024;

/// What one connection did, for --log-connections.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub replies: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Why a connection was closed before its client finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    Idle,
    Line,
}

/// An exchange whose replies keep the style they started with.
const NOT_FOLLOWING: u64 = u64::MAX;

/// The state of one request/reply conversation, independent of the socket.
#[derive(Debug)]
pub struct Exchange {
    responder: Responder,
    stamp: StampWriter,
    /// Input received but not yet answered: an unfinished line, or what did
    /// not fit in the output budget.
    pending: Vec<u8>,
    /// Replies waiting to be written.
    pub out: Vec<u8>,
    /// Replies stop being added once `out` holds this many bytes.
    budget: usize,
    /// Replies in `out`, not yet counted.
    replies: u64,
    pub at_eof: bool,
    /// When the unfinished line in `pending` began.
    partial_since: Option<Instant>,
    /// Some input was answered since the line timer was last looked at.
    progressed: bool,
    pub totals: Totals,
    pub last_input: Instant,
    /// The generation of the configuration the replies are styled by
    /// (`NOT_FOLLOWING`: they do not follow reloads).
    styled_by: u64,
}

impl Exchange {
    pub fn new(responder: Responder, stamp: StampWriter, budget: usize) -> Self {
        Exchange {
            responder,
            stamp,
            pending: Vec::new(),
            out: Vec::new(),
            budget: budget.max(1),
            replies: 0,
            at_eof: false,
            partial_since: None,
            progressed: false,
            totals: Totals::default(),
            last_input: Instant::now(),
            styled_by: NOT_FOLLOWING,
        }
    }

    /// Replies follow the time format and template of `config`, and of
    /// each configuration a reload puts in its place.
    pub fn following(mut self, config: &Config) -> Self {
        self.styled_by = config.generation();
        self
    }

    /// Takes up a reload's time format and template: one atomic load and
    /// compare per read while nothing changed.
    #[inline]
    pub fn follow_reload(&mut self, shared: &Shared) {
        if self.styled_by != NOT_FOLLOWING && self.styled_by != shared.generation() {
            self.restyle(shared);
        }
    }

    #[cold]
    #[inline(never)]
    fn restyle(&mut self, shared: &Shared) {
        let config = shared.config();
        self.stamp
            .restyle(config.style.clone(), config.options.reply_template.clone());
        self.styled_by = config.generation();
    }

    /// Bytes that arrived before the connection was handed over (after a
    /// PROXY header), answered as if just read.
    pub fn with_early_input(mut self, input: Vec<u8>) -> Self {
        self.pending = input;
        self
    }

    pub fn read_limit(&self, scratch: usize) -> usize {
        self.responder.read_limit(scratch)
    }

    /// One read's worth of input (empty: the client finished sending),
    /// stamped with the kernel's receive time if there is one.
    pub fn feed(&mut self, data: &[u8], received: Option<SystemTime>) {
        self.at_eof = data.is_empty();
        self.totals.bytes_in += data.len() as u64;
        self.take_input(data, received.unwrap_or_else(SystemTime::now));
        self.note_input(Instant::now());
    }

    /// Input kept without answering it yet: with faults, replies are made
    /// one at a time (`answer_one`), each with its own fate. Call
    /// `note_input` once they are made.
    pub fn receive(&mut self, data: &[u8]) {
        self.at_eof = data.is_empty();
        self.totals.bytes_in += data.len() as u64;
        self.pending.extend_from_slice(data);
    }

    /// Answers the next message waiting into `out`, stamped `now`.
    pub fn answer_one(&mut self, now: SystemTime) {
        let one = self.responder.one_message_budget(self.budget);
        let budget = std::mem::replace(&mut self.budget, one);
        self.answer_pending(now);
        self.budget = budget;
    }

    /// When waiting for more input must stop, and why.
    pub fn input_deadline(&self, limits: &Limits) -> (Instant, Expired) {
        let idle = (self.last_input + limits.idle_timeout, Expired::Idle);
        match self.partial_since {
            Some(since) if since + limits.line_timeout < idle.0 => {
                (since + limits.line_timeout, Expired::Line)
            }
            _ => idle,
        }
    }

    /// Keeps the line timer honest: it runs while an unanswered partial
    /// line waits, and restarts whenever a piece of input was answered (a
    /// huge line streamed at full speed is answered piece by piece and is
    /// not a slow sender).
    pub fn note_input(&mut self, now: Instant) {
        self.last_input = now;
        let progressed = std::mem::take(&mut self.progressed);
        self.partial_since = match (self.pending.is_empty(), progressed) {
            (true, _) => None,
            (false, true) => Some(now),
            (false, false) => self.partial_since.or(Some(now)),
        };
    }

    /// Input waits that no reply was made of yet.
    pub fn has_unanswered_input(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn has_pending_work(&self) -> bool {
        !self.pending.is_empty() || self.at_eof
    }

    /// The replies now in `out`, counted once: into the totals and for the
    /// caller's counters.
    pub fn take_reply_count(&mut self) -> u64 {
        let replies = std::mem::take(&mut self.replies);
        self.totals.replies += replies;
        self.totals.bytes_out += self.out.len() as u64;
        replies
    }

    /// Empties `out` after it was written.
    pub fn written(&mut self) {
        self.out.clear();
        release_if_large(&mut self.out);
    }

    /// Answers freshly read bytes, keeping whatever cannot be answered yet.
    fn take_input(&mut self, data: &[u8], now: SystemTime) {
        if self.pending.is_empty() {
            let used = self.respond(data, now);
            self.pending.extend_from_slice(&data[used..]);
        } else {
            self.pending.extend_from_slice(data);
            self.answer_pending(now);
        }
    }

    /// Answers what waits in `pending`, as far as the budget allows.
    pub fn answer_pending(&mut self, now: SystemTime) {
        if !self.has_pending_work() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let used = self.respond(&pending, now);
        self.pending = pending;
        self.pending.drain(..used);
        release_if_large(&mut self.pending);
    }

    fn respond(&mut self, input: &[u8], now: SystemTime) -> usize {
        let (used, replies) = self.responder.answer(
            input,
            self.at_eof,
            now,
            &mut self.stamp,
            &mut self.out,
            self.budget,
        );
        self.replies += replies;
        self.progressed |= used > 0;
        if self.responder.refuses(&input[used..]) {
            // Nothing after a header that cannot be a message can be
            // framed again: the input ends here, as sockperf's server
            // ends such a connection.
            tracing::debug!("closing a connection whose input cannot be framed");
            self.at_eof = true;
        }
        used
    }
}

/// A line started at `now` or later cannot be due before this, nor can
/// silence that starts now.
pub fn earliest_possible_deadline(now: Instant, limits: &Limits) -> Instant {
    now + limits.line_timeout.min(limits.idle_timeout)
}

/// How long the timer may sleep before an input deadline can be due.
pub fn next_check(deadline: Instant, now: Instant, limits: &Limits) -> Instant {
    deadline.min(earliest_possible_deadline(now, limits))
}

fn release_if_large(buf: &mut Vec<u8>) {
    if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
        *buf = Vec::new();
    }
}

/// How long a closing connection keeps reading (and dropping) what the
/// client still sends, so our last replies are not destroyed by a reset.
pub const LINGER: Duration = Duration::from_secs(2);
/// While draining, a connection is closed once its input has been quiet
/// this long: lines already on their way when the signal came (in the
/// client's kernel, or queued behind a busy CPU) still get answered.
pub const DRAIN_SETTLE: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Stamper, TimeFormat, TimeStyle};
    use proptest::prelude::*;
    use std::sync::Arc;
    use std::time::UNIX_EPOCH;

    fn exchange(responder: Responder, budget: usize) -> Exchange {
        let style = TimeStyle {
            format: TimeFormat::Ctime,
            utc: true,
        };
        let stamp = StampWriter::new(Stamper::new(Arc::new(style)), None, None);
        Exchange::new(responder, stamp, budget)
    }

    /// Feeds `input` cut at `cuts`, writing out whenever the budget fills,
    /// and returns everything that would have been sent.
    fn replies(responder: Responder, budget: usize, input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_597_503);
        let mut ex = exchange(responder, budget);
        let mut sent = Vec::new();
        let mut at = 0;
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        bounds.push(input.len());
        bounds.sort();
        for end in bounds {
            ex.take_input(&input[at..end], now);
            at = end;
            loop {
                sent.append(&mut ex.out);
                ex.answer_pending(now);
                if ex.out.is_empty() {
                    break;
                }
            }
        }
        ex.at_eof = true;
        loop {
            ex.answer_pending(now);
            if ex.out.is_empty() {
                break;
            }
            sent.append(&mut ex.out);
        }
        sent
    }

    proptest! {
        #[test]
        fn any_split_of_the_input_gives_the_same_replies(
            input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..600),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            max_line in 1usize..80,
            budget in 1usize..200,
        ) {
            for responder in [Responder::Lines { max_line }, Responder::Echo] {
                let whole = replies(responder, 1 << 20, &input, &[]);
                let split = replies(responder, budget, &input, &cuts);
                prop_assert_eq!(whole, split);
            }
        }
    }

    #[test]
    fn output_budget_holds_back_the_rest_of_a_read() {
        let mut ex = exchange(Responder::Lines { max_line: 1024 }, 100);
        ex.take_input(&b"x\n".repeat(1000), SystemTime::now());
        assert!(ex.out.len() >= 100 && ex.out.len() < 100 + 30);
        assert_eq!(ex.pending.len(), 2000 - 2 * (ex.out.len() / 29));
    }

    #[test]
    fn unfinished_line_starts_the_line_timer_and_a_newline_stops_it() {
        let limits = Limits::default();
        let mut ex = exchange(Responder::Lines { max_line: 1024 }, 1024);
        let t0 = Instant::now();
        ex.take_input(b"partial", SystemTime::now());
        ex.note_input(t0);
        assert!(
            matches!(ex.input_deadline(&limits), (d, Expired::Line) if d == t0 + limits.line_timeout)
        );
        ex.take_input(b" done\n", SystemTime::now());
        ex.note_input(t0 + Duration::from_secs(1));
        assert!(matches!(ex.input_deadline(&limits), (_, Expired::Idle)));
    }

    #[test]
    fn an_answered_piece_of_a_long_line_restarts_the_line_timer() {
        let limits = Limits::default();
        let mut ex = exchange(Responder::Lines { max_line: 4 }, 1024);
        let t0 = Instant::now();
        ex.take_input(b"ab", SystemTime::now());
        ex.note_input(t0);
        let t1 = t0 + Duration::from_secs(30);
        ex.take_input(b"cdef", SystemTime::now()); // "abcd" answered, "ef" waits
        ex.note_input(t1);
        assert!(
            matches!(ex.input_deadline(&limits), (d, Expired::Line) if d == t1 + limits.line_timeout)
        );
    }

    /// Every connection, idle ones too, keeps an exchange in a box of its
    /// own. 24 bytes more of it (a stamper with two fields more) cost 0.2
    /// KiB per connection with 10,000 held: 1.62 KiB against 1.43-1.47,
    /// past the 1.5 KiB an idle connection may cost. Only the task's size
    /// was watched then.
    #[test]
    fn exchange_stays_small() {
        let size = size_of::<Exchange>();
        assert!(size <= 216, "Exchange grew to {size} bytes");
    }
}
