//! A small spinning thread pool for the per-token kernels. Decode runs a few hundred
//! short parallel products per token; rayon parks and wakes its workers for each, which
//! showed up as a third of decode time in the kernel's scheduler. Here workers spin on a
//! generation counter while work keeps coming (as ggml's pool does) and sleep on a
//! condition variable once idle for a while, so an idle server costs no CPU.
//!
//! A job is cut into [`PARTS_PER_THREAD`] parts per thread, which the caller and the
//! workers claim from a counter. The caller waits only for parts a worker has claimed:
//! on a busy machine, where a worker may not get its core for a whole time slice, the
//! caller does that worker's share itself instead of waiting for it to wake.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Spins between yields of the core while waiting (cheap when the core is ours alone,
/// and it keeps a busy machine from stalling us for whole time slices).
const SPINS_BEFORE_YIELD: u32 = 256;

/// How long an idle worker spins before it sleeps.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_millis(5);

/// Parts per pool thread of every job: small enough that a preempted worker holds up
/// little, few enough that claiming costs nothing.
pub const PARTS_PER_THREAD: usize = 4;

type Job = dyn Fn(usize, usize) + Sync;

struct Shared {
    /// Bumped for every job.
    generation: AtomicUsize,
    /// The current job while it takes helpers: its raw fat pointer, valid until the
    /// caller clears it and every worker counted in `active` has left.
    job: Mutex<Option<JobPtr>>,
    /// The next unclaimed part of the current job, and how many it has.
    next: AtomicUsize,
    parts: AtomicUsize,
    /// Workers inside the current job.
    active: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
    /// Set by [`Pool::rest`]: idle workers sleep now instead of spinning.
    resting: std::sync::atomic::AtomicBool,
}

#[derive(Clone, Copy)]
struct JobPtr(*const Job);
// SAFETY: the pointee is `Sync` and outlives every use (see `Pool::run`).
unsafe impl Send for JobPtr {}

impl Shared {
    /// Runs parts of the current job until none is left.
    fn claim_parts(&self, f: &(dyn Fn(usize, usize) + Sync + '_)) {
        let parts = self.parts.load(Ordering::Acquire);
        loop {
            let i = self.next.fetch_add(1, Ordering::AcqRel);
            if i >= parts {
                return;
            }
            f(i, parts);
        }
    }
}

pub struct Pool {
    shared: Arc<Shared>,
    threads: usize,
    /// Serialises callers: one job at a time.
    run_lock: Mutex<()>,
}

impl Pool {
    fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            job: Mutex::new(None),
            next: AtomicUsize::new(0),
            parts: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
            resting: std::sync::atomic::AtomicBool::new(false),
        });
        for _ in 1..threads {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("smelt-kernel".into())
                .spawn(move || worker(shared))
                .expect("spawning a kernel thread");
        }
        Self {
            shared,
            threads,
            run_lock: Mutex::new(()),
        }
    }

    /// Tells idle workers to sleep at once rather than spin until the next job: for
    /// stretches of work on other threads (prompt attention on rayon's pool), where
    /// spinning would take their cores. The next [`Pool::run`] wakes them as usual.
    pub fn rest(&self) {
        self.shared.resting.store(true, Ordering::Relaxed);
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(part, parts)` once for every part = 0..parts of the job, spread over the
    /// pool's threads and the caller, and returns when all are done. `parts` is
    /// [`PARTS_PER_THREAD`] × threads (1 with one thread); which thread runs a part
    /// varies, so a part's work must depend on its index only.
    pub fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        if self.threads == 1 {
            f(0, 1);
            return;
        }
        let _one_at_a_time = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let shared = &*self.shared;
        shared.resting.store(false, Ordering::Relaxed);
        // SAFETY: erase the borrow's lifetime; the pointer is withdrawn below, and we
        // wait until no worker that took it is still inside.
        let ptr: *const Job =
            unsafe { std::mem::transmute::<&(dyn Fn(usize, usize) + Sync), &'static Job>(f) };
        shared.next.store(0, Ordering::SeqCst);
        shared
            .parts
            .store(PARTS_PER_THREAD * self.threads, Ordering::SeqCst);
        *shared.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(JobPtr(ptr));
        shared.generation.fetch_add(1, Ordering::SeqCst);
        {
            let _g = shared.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.wake.notify_all();
        }
        shared.claim_parts(f);
        // Every part is claimed: late workers must not join, and those inside finish.
        *shared.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut spins = 0u32;
        while shared.active.load(Ordering::Acquire) != 0 {
            spins = spins.wrapping_add(1);
            // On an oversubscribed machine the worker we wait for may be descheduled:
            // give it the core instead of burning our whole time slice.
            if spins.is_multiple_of(SPINS_BEFORE_YIELD) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

fn worker(shared: Arc<Shared>) {
    let mut seen = 0usize;
    loop {
        let idle_since = Instant::now();
        let mut spins = 0u32;
        loop {
            let g = shared.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            spins = spins.wrapping_add(1);
            let resting = shared.resting.load(Ordering::Relaxed);
            if resting || (spins.is_multiple_of(1024) && idle_since.elapsed() > SPIN_BEFORE_SLEEP) {
                let guard = shared.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
                if shared.generation.load(Ordering::Acquire) == seen {
                    drop(shared.wake.wait_timeout(guard, Duration::from_millis(100)));
                }
            } else if spins.is_multiple_of(SPINS_BEFORE_YIELD) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        // Join the job only while its caller still hands it out (counted under the lock
        // it withdraws the job with).
        let job = {
            let slot = shared.job.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_some() {
                shared.active.fetch_add(1, Ordering::AcqRel);
            }
            *slot
        };
        if let Some(JobPtr(ptr)) = job {
            // SAFETY: `run` keeps the closure alive until `active` is back to zero.
            shared.claim_parts(unsafe { &*ptr });
            shared.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The process-wide pool, sized like rayon's (so `--threads` applies to both).
pub fn global() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool::new(rayon::current_num_threads().max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once() {
        let pool = Pool::new(3);
        for _ in 0..1000 {
            let hits: Vec<AtomicUsize> = (0..3 * PARTS_PER_THREAD)
                .map(|_| AtomicUsize::new(0))
                .collect();
            pool.run(&|i, n| {
                assert_eq!(n, 3 * PARTS_PER_THREAD);
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    /// A job does not wait for a worker that has not started: with the only worker
    /// kept busy (here: inside a long first part), the caller claims the rest.
    #[test]
    fn the_caller_takes_the_parts_of_a_late_worker() {
        let pool = Pool::new(2);
        let by_caller = AtomicUsize::new(0);
        let caller = std::thread::current().id();
        pool.run(&|i, _| {
            if std::thread::current().id() == caller {
                by_caller.fetch_add(1, Ordering::Relaxed);
            } else if i < PARTS_PER_THREAD {
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        assert!(by_caller.load(Ordering::Relaxed) >= PARTS_PER_THREAD);
    }
}
