//! A small spinning thread pool for the per-token kernels. Decode runs a few hundred
//! short parallel products per token; rayon parks and wakes its workers for each, which
//! showed up as a third of decode time in the kernel's scheduler. Here workers spin on a
//! generation counter while work keeps coming (as ggml's pool does) and sleep on a
//! condition variable once idle for a while, so an idle server costs no CPU.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Spins between yields of the core while waiting (cheap when the core is ours alone,
/// and it keeps a busy machine from stalling us for whole time slices).
const SPINS_BEFORE_YIELD: u32 = 256;

/// How long an idle worker spins before it sleeps.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_millis(5);

type Job = dyn Fn(usize, usize) + Sync;

struct Shared {
    /// Bumped for every job; workers run each generation once.
    generation: AtomicUsize,
    /// Workers still running the current job.
    pending: AtomicUsize,
    /// The current job, as a raw fat pointer valid while `pending` > 0.
    job: Mutex<Option<JobPtr>>,
    sleep_lock: Mutex<()>,
    wake: Condvar,
    /// Set by [`Pool::rest`]: idle workers sleep now instead of spinning.
    resting: std::sync::atomic::AtomicBool,
}

#[derive(Clone, Copy)]
struct JobPtr(*const Job);
// SAFETY: the pointee is `Sync` and outlives every use (see `Pool::run`).
unsafe impl Send for JobPtr {}

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
            pending: AtomicUsize::new(0),
            job: Mutex::new(None),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
            resting: std::sync::atomic::AtomicBool::new(false),
        });
        for index in 1..threads {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("smelt-kernel-{index}"))
                .spawn(move || worker(shared, index, threads))
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

    /// Runs `f(index, threads)` on every thread of the pool (the caller is index 0) and
    /// returns when all are done.
    pub fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        if self.threads == 1 {
            f(0, 1);
            return;
        }
        let _one_at_a_time = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.resting.store(false, Ordering::Relaxed);
        // SAFETY: erase the borrow's lifetime; we wait below until no worker uses it.
        let ptr: *const Job =
            unsafe { std::mem::transmute::<&(dyn Fn(usize, usize) + Sync), &'static Job>(f) };
        *self.shared.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(JobPtr(ptr));
        self.shared
            .pending
            .store(self.threads - 1, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        {
            let _g = self
                .shared
                .sleep_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        f(0, self.threads);
        let mut spins = 0u32;
        while self.shared.pending.load(Ordering::Acquire) != 0 {
            spins = spins.wrapping_add(1);
            // On an oversubscribed machine the worker we wait for may be descheduled:
            // give it the core instead of burning our whole time slice.
            if spins.is_multiple_of(SPINS_BEFORE_YIELD) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        *self.shared.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

fn worker(shared: Arc<Shared>, index: usize, threads: usize) {
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
        let job = *shared.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(JobPtr(ptr)) = job {
            // SAFETY: `run` keeps the closure alive until `pending` reaches zero.
            let f = unsafe { &*ptr };
            f(index, threads);
        }
        shared.pending.fetch_sub(1, Ordering::AcqRel);
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
    fn every_thread_runs_each_job_once() {
        let pool = Pool::new(3);
        for _ in 0..1000 {
            let hits = [
                AtomicUsize::new(0),
                AtomicUsize::new(0),
                AtomicUsize::new(0),
            ];
            pool.run(&|i, n| {
                assert_eq!(n, 3);
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }
}
