//! Named pause points, so that a test can stop a member between two steps and run something in
//! between: the interleavings that decide the VIP promise are tested deterministically, not by
//! luck. Unarmed (always, outside tests) a point costs one atomic load.
//!
//! ```ignore
//! let p = node.failpoints.arm("controller.before_vip_decision");
//! p.reached().await;    // the member is stopped there
//! /* ... the racing call ... */
//! p.release();          // it goes on (and the point is disarmed)
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// The pause points of one member.
#[derive(Default)]
pub struct Failpoints {
    armed: AtomicBool,
    points: Mutex<BTreeMap<&'static str, Arc<Point>>>,
}

/// One armed point: `reached` turns true when the code gets there, `released` lets it go on.
pub struct Point {
    reached: watch::Sender<bool>,
    released: watch::Sender<bool>,
}

impl Point {
    /// Waits until the code stopped at this point.
    pub async fn reached(&self) {
        let mut r = self.reached.subscribe();
        let _ = r.wait_for(|v| *v).await;
    }

    /// Lets the code go on.
    pub fn release(&self) {
        self.released.send_replace(true);
    }
}

impl Failpoints {
    /// Arms `name`: the next code to get there stops until [`Point::release`].
    pub fn arm(&self, name: &'static str) -> Arc<Point> {
        let p = Arc::new(Point {
            reached: watch::channel(false).0,
            released: watch::channel(false).0,
        });
        self.points.lock().unwrap().insert(name, p.clone());
        self.armed.store(true, Ordering::Release);
        p
    }

    /// Stops here if `name` is armed, until released; the point is then disarmed.
    pub async fn hit(&self, name: &'static str) {
        if !self.armed.load(Ordering::Acquire) {
            return;
        }
        let Some(p) = self.points.lock().unwrap().get(name).cloned() else {
            return;
        };
        p.reached.send_replace(true);
        let mut released = p.released.subscribe();
        let _ = released.wait_for(|v| *v).await;
        let mut points = self.points.lock().unwrap();
        if points.get(name).is_some_and(|q| Arc::ptr_eq(q, &p)) {
            points.remove(name);
        }
        if points.is_empty() {
            self.armed.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_point_stops_the_code_until_released_then_disarms() {
        let f = Arc::new(Failpoints::default());
        // Unarmed: no stop.
        f.hit("x").await;
        let p = f.arm("x");
        let f2 = f.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            f2.hit("x").await;
            tx.send(()).unwrap();
        });
        p.reached().await;
        assert!(rx.try_recv().is_err(), "went past an armed point");
        p.release();
        rx.recv().await.unwrap();
        task.await.unwrap();
        // Disarmed after one stop.
        f.hit("x").await;
    }
}
