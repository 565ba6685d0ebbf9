//! The latch thread: persists the stop latch off the control loop, so that braking never
//! waits for the disk (a slow SD card's fsync can take seconds). Jobs are done in order; each
//! reports back to the loop, and the e-stops that waited on a job are acknowledged here, once
//! their latch is on disk or could not be put there (said in the ack's `persisted`).

use crate::broadcast::Outbox;
use crate::latch::{EstopLatch, LatchState};
use ads_protocol::gate::{AcceptedAction, SharedOutcomes};
use ads_protocol::{Event, Message};
use std::sync::mpsc::{self, Receiver, Sender};

/// One state to persist, and the e-stops to acknowledge once it is.
#[derive(Debug)]
pub struct LatchJob {
    pub state: LatchState,
    pub why: String,
    pub estops: Vec<AcceptedAction>,
}

/// What became of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatchDone {
    pub state: LatchState,
    pub result: Result<(), String>,
}

/// The handle the control loop keeps; dropping it finishes the queued jobs and joins.
#[derive(Debug)]
pub struct LatchWriter {
    jobs: Option<Sender<LatchJob>>,
    done: Receiver<LatchDone>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LatchWriter {
    pub fn spawn(mut latch: EstopLatch, outbox: Outbox, outcomes: SharedOutcomes) -> std::io::Result<Self> {
        // Unbounded: jobs come only from the loop, at most one per e-stop the listener's
        // bounded mailbox let through, and the loop must never block on this thread.
        let (jobs_tx, jobs) = mpsc::channel::<LatchJob>();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new().name("latch".into()).spawn(move || {
            for job in jobs {
                let result = latch.store(job.state, &job.why).map_err(|e| e.to_string());
                if let Err(e) = &result {
                    tracing::error!("{e}");
                }
                // Reported before the acks go out: an operator's next action, sent on an ack,
                // then always finds the loop knowing the result.
                let _ = done_tx.send(LatchDone { state: job.state, result: result.clone() });
                for AcceptedAction { action, seq } in job.estops {
                    let detail = match &result {
                        Ok(()) => "emergency stop: throttle cut, full brake, latched until reset".to_string(),
                        Err(e) => format!(
                            "emergency stop: throttle cut, full brake, latched, but NOT persisted ({e}); \
                             the car stays braked"
                        ),
                    };
                    let ack = Event::Ack {
                        action_id: action.id,
                        sender: action.sender,
                        seq,
                        accepted: true,
                        reason: None,
                        detail,
                        persisted: Some(result.is_ok()),
                    };
                    if let Event::Ack { action_id, .. } = &ack {
                        outcomes
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .decide(action_id, &ack);
                    }
                    outbox.send_urgent(Message::Event(ack), ads_shmem_ipc::clock::wall_ns());
                }
            }
        })?;
        Ok(Self { jobs: Some(jobs_tx), done, thread: Some(thread) })
    }

    /// Queues `job`; never blocks.
    pub fn submit(&self, job: LatchJob) {
        if let Some(jobs) = &self.jobs {
            if jobs.send(job).is_err() {
                tracing::error!("the latch thread is gone: the latch is no longer persisted");
            }
        }
    }

    /// Results since the last call, in order.
    pub fn finished(&self) -> Vec<LatchDone> {
        self.done.try_iter().collect()
    }
}

impl Drop for LatchWriter {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the latch thread panicked");
            }
        }
    }
}
