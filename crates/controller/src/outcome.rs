//! What one reconcile comes to. A reconcile computes its object's whole status and returns it with the Events a
//! person needs and when to look again; the runner ([`crate::run`]) writes the status once, only when it changed,
//! and then publishes the Events. No step writes status on its own, so a pass that moves through several states
//! writes only the last.

use kube::runtime::controller::Action;
use kube::runtime::events::Event;

use crate::error::{Error, Result};

pub struct Outcome<S> {
    /// The object's status as this pass left it; `None` leaves the stored status as it is.
    pub status: Option<S>,
    /// Published after the status is written.
    pub events: Vec<Event>,
    /// When to look again, or why the pass failed (retried after the object's backoff).
    pub next: Result<Action>,
}

impl<S> Outcome<S> {
    /// Nothing to write: the object is paused, or already gone.
    pub fn unchanged(next: Action) -> Self {
        Self {
            status: None,
            events: Vec::new(),
            next: Ok(next),
        }
    }

    /// `status` as the pass computed it, and how the pass ended. A pass that failed on the management apiserver
    /// itself keeps the stored status: it is likely out of reach for the write too, and half a pass must not
    /// record a new `observedGeneration` for conditions it never got to. Every other failure (a provider's, an
    /// unknown provider, an add-on's) is recorded in the status the pass computed.
    pub fn of(status: S, events: Vec<Event>, next: Result<Action>) -> Self {
        let keep_stored = matches!(&next, Err(Error::Kube(_)));
        Self {
            status: (!keep_stored).then_some(status),
            events,
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_cut_short_by_the_apiserver_leaves_the_status_alone_and_any_other_ending_writes_it() {
        let unreachable = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let kube = Error::Kube(kube::Error::Service(Box::new(unreachable)));
        assert!(Outcome::of(1, vec![], Err(kube)).status.is_none());

        let provider = Error::Provider {
            provider: "sim".into(),
            source: slipway_provider::ProviderError::permanent("InvalidSettings", "bad"),
        };
        assert_eq!(Outcome::of(2, vec![], Err(provider)).status, Some(2));
        assert_eq!(
            Outcome::of(3, vec![], Ok(Action::await_change())).status,
            Some(3)
        );
        assert!(
            Outcome::<u8>::unchanged(Action::await_change())
                .status
                .is_none()
        );
    }
}
