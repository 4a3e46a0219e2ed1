//! Tells when a recorded target's process ended, once per process: its PID is gone or
//! another holds its place, its `process_start_time_seconds` changed, or, where no PID is
//! known, its pprof endpoint refused connections several times in a row.

use chrono::{DateTime, Utc};

/// Connections refused in a row that suggest the process is gone, where no PID is known.
pub const REFUSALS: u32 = 3;

/// What was seen of a target's process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Seen {
    /// The sampler looked for the process: (PID, start time in clock ticks), or none.
    Process(Option<(u32, u64)>),
    /// `process_start_time_seconds` on the target's /metrics.
    StartTime(f64),
    /// The pprof endpoint answered, whatever it said.
    Answered,
    /// A connection to the pprof endpoint was refused.
    Refused,
}

/// A process that ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    /// How it was told, e.g. `process 1234 is gone`.
    pub why: String,
    /// The last time it was seen alive: nothing recorded later is of it.
    pub last_alive: DateTime<Utc>,
    /// When it was first seen, if that was after an earlier one ended: nothing recorded
    /// before is of it.
    pub since: Option<DateTime<Utc>>,
}

/// What is known of the current process of a target.
#[derive(Debug, Default)]
pub struct Lifetime {
    /// (PID, start ticks) of the process, once the sampler found it. A known PID that is
    /// alive with the same start time is the same process, whatever its endpoint does: a
    /// listener that refuses for a while (its HTTP server restarting, a full accept queue)
    /// is no exit.
    process: Option<(u32, u64)>,
    start_time: Option<f64>,
    refused: u32,
    last_alive: Option<DateTime<Utc>>,
    since: Option<DateTime<Utc>>,
    /// Its end was told; nothing more is until a process is seen alive again.
    ended: bool,
    /// Refusals told an end while the process had this start time (`None` inside: none
    /// known). Refusals tell an end once per process: with the same start time after, the
    /// process had not ended, and they tell nothing more of it.
    told_by_refusals: Option<Option<f64>>,
}

impl Lifetime {
    /// Takes in what was seen at `at`; the end of the process, the first time it is told.
    pub fn observe(&mut self, seen: Seen, at: DateTime<Utc>) -> Option<Ended> {
        match seen {
            Seen::Process(Some(process)) => match self.process {
                Some(old) if old != process => {
                    let ended = self.end(format!("process {} was replaced by process {}", old.0, process.0));
                    self.begin(at);
                    self.process = Some(process);
                    ended
                }
                _ => {
                    self.process = Some(process);
                    self.alive(at);
                    None
                }
            },
            Seen::Process(None) => match self.process {
                Some((pid, _)) => self.end(format!("process {pid} is gone")),
                None => None,
            },
            Seen::StartTime(start) => self.start_time(start, at),
            Seen::Answered => {
                self.alive(at);
                None
            }
            Seen::Refused => self.refused(),
        }
    }

    fn start_time(&mut self, start: f64, at: DateTime<Utc>) -> Option<Ended> {
        match self.start_time {
            Some(old) if (old - start).abs() > 0.5 => {
                // A new process. If refusals told the old one's end already, that was it.
                let ended = match self.told_by_refusals.take() {
                    Some(_) => None,
                    None => {
                        let ended =
                            self.end("its process_start_time_seconds changed: it restarted".to_string());
                        self.begin(at);
                        ended
                    }
                };
                self.start_time = Some(start);
                self.alive(at);
                ended
            }
            _ => {
                self.start_time = Some(start);
                self.alive(at);
                None
            }
        }
    }

    /// A refusal suggests an end only where no PID is known, after `REFUSALS` in a row,
    /// and once per process.
    fn refused(&mut self) -> Option<Ended> {
        let told_of_this_one = match self.told_by_refusals {
            Some(start) => start.is_some() && start == self.start_time,
            None => false,
        };
        if self.process.is_some() || told_of_this_one {
            return None;
        }
        self.refused += 1;
        if self.refused < REFUSALS {
            return None;
        }
        let ended = self.end(format!("its pprof endpoint refused {REFUSALS} connections in a row"));
        if ended.is_some() {
            self.told_by_refusals = Some(self.start_time);
        }
        ended
    }

    /// Seen alive: after an end, that is a new process, of which nothing is known yet;
    /// but what is known of the one whose end refusals told stays, to tell whether it is
    /// the same.
    fn alive(&mut self, at: DateTime<Utc>) {
        if self.ended {
            let (start_time, told) = (self.start_time, self.told_by_refusals);
            self.begin(at);
            if told.is_some() {
                (self.start_time, self.told_by_refusals) = (start_time, told);
            }
        }
        self.refused = 0;
        self.last_alive = Some(at);
    }

    fn begin(&mut self, at: DateTime<Utc>) {
        *self = Lifetime { since: Some(at), last_alive: Some(at), ..Lifetime::default() };
    }

    /// The end, told once, and only of a process seen alive.
    fn end(&mut self, why: String) -> Option<Ended> {
        if self.ended {
            return None;
        }
        let last_alive = self.last_alive?;
        self.ended = true;
        Some(Ended { why, last_alive, since: self.since })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::at;

    /// A kill: the PID is gone (told once, however often it is seen gone or refused), then
    /// a new process comes up, which is a new lifetime with an end of its own.
    #[test]
    fn a_process_killed_and_started_again() {
        let mut life = Lifetime::default();
        assert_eq!(life.observe(Seen::Process(Some((10, 1))), at(0)), None);
        assert_eq!(life.observe(Seen::Answered, at(5)), None);
        let ended = life.observe(Seen::Process(None), at(7)).unwrap();
        assert_eq!(ended, Ended { why: "process 10 is gone".into(), last_alive: at(5), since: None });
        for seen in [Seen::Process(None), Seen::Refused, Seen::Refused, Seen::Refused] {
            assert_eq!(life.observe(seen, at(8)), None, "{seen:?} tells the same end again");
        }
        // A new process answers first; the sampler then finds its PID: no end there.
        assert_eq!(life.observe(Seen::Answered, at(20)), None);
        assert_eq!(life.observe(Seen::Process(Some((11, 9))), at(21)), None);
        let ended = life.observe(Seen::Process(None), at(30)).unwrap();
        assert_eq!((ended.last_alive, ended.since), (at(21), Some(at(20))));
    }

    /// A restart faster than the sampler: another PID in its place ends the old process and
    /// begins the new one at once.
    #[test]
    fn replaced_between_two_samples() {
        let mut life = Lifetime::default();
        life.observe(Seen::Process(Some((10, 1))), at(0));
        let ended = life.observe(Seen::Process(Some((12, 5))), at(5)).unwrap();
        assert_eq!(ended.why, "process 10 was replaced by process 12");
        assert_eq!(ended.last_alive, at(0));
        assert_eq!(life.observe(Seen::Process(Some((12, 5))), at(10)), None);
        assert!(life.observe(Seen::Process(None), at(15)).is_some(), "the new one ends too");
    }

    /// A process alive the whole time (same PID, same start time) whose listener refuses
    /// for a while, as when its HTTP server restarts: three short outages and one long one,
    /// with the sampler finding the PID alive between and during them, tell no end.
    #[test]
    fn a_live_pid_is_never_an_exit() {
        let mut life = Lifetime::default();
        let alive = Seen::Process(Some((10, 1)));
        assert_eq!(life.observe(alive, at(0)), None);
        let mut told = Vec::new();
        for outage in 0..3 {
            let start = 10 + outage * 20;
            for second in 0..4 {
                told.extend(life.observe(Seen::Refused, at(start + second)));
            }
            told.extend(life.observe(alive, at(start + 5)));
            told.extend(life.observe(Seen::Answered, at(start + 6)));
        }
        for second in 0..38 {
            told.extend(life.observe(Seen::Refused, at(100 + second)));
            if second % 5 == 0 {
                told.extend(life.observe(alive, at(100 + second)));
            }
        }
        assert_eq!(told, Vec::new());
        let ended = life.observe(Seen::Process(None), at(200)).unwrap();
        assert_eq!(ended.why, "process 10 is gone", "a real exit is still told");
    }

    /// Where no PID is known, refusals tell an end once per process: the endpoint answers
    /// again with the same start time (the same process), and later refusals tell nothing;
    /// a new start time is the new process, whose own refusals may tell its end.
    #[test]
    fn refusals_tell_once_per_process() {
        let mut life = Lifetime::default();
        life.observe(Seen::StartTime(1000.0), at(0));
        life.observe(Seen::Answered, at(1));
        let refuse = |life: &mut Lifetime, from: i64| {
            (0..REFUSALS as i64).filter_map(|n| life.observe(Seen::Refused, at(from + n))).collect::<Vec<_>>()
        };
        assert_eq!(refuse(&mut life, 2).len(), 1, "the first outage suggests an end");
        assert_eq!(life.observe(Seen::Answered, at(10)), None);
        assert_eq!(life.observe(Seen::StartTime(1000.0), at(11)), None);
        assert_eq!(refuse(&mut life, 12), Vec::new(), "the same process: told once");
        assert_eq!(life.observe(Seen::Answered, at(20)), None);
        assert_eq!(life.observe(Seen::StartTime(1090.0), at(21)), None, "its end was told already");
        assert_eq!(refuse(&mut life, 22).len(), 1, "the new process's own end");
    }

    /// Without a local process: refusals in a row (not with an answer between them), or a
    /// new start time.
    #[test]
    fn refusals_and_start_times() {
        let mut life = Lifetime::default();
        assert_eq!(life.observe(Seen::Refused, at(0)), None);
        assert_eq!(life.observe(Seen::Refused, at(1)), None);
        assert_eq!(life.observe(Seen::Refused, at(2)), None, "never seen alive: nothing ended");
        life.observe(Seen::Answered, at(3));
        life.observe(Seen::Refused, at(4));
        life.observe(Seen::Refused, at(5));
        life.observe(Seen::Answered, at(6));
        life.observe(Seen::Refused, at(7));
        life.observe(Seen::Refused, at(8));
        let ended = life.observe(Seen::Refused, at(9)).unwrap();
        assert_eq!(ended.why, "its pprof endpoint refused 3 connections in a row");
        assert_eq!(ended.last_alive, at(6));

        let mut life = Lifetime::default();
        life.observe(Seen::StartTime(1000.0), at(0));
        assert_eq!(life.observe(Seen::StartTime(1000.2), at(5)), None, "jitter is no restart");
        let ended = life.observe(Seen::StartTime(1090.0), at(10)).unwrap();
        assert!(ended.why.contains("process_start_time_seconds"), "{}", ended.why);
        assert_eq!(life.observe(Seen::StartTime(1090.0), at(15)), None);
    }
}
