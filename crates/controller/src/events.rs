//! The Events a person needs: what the status does not keep. A TTL deleting a cluster, machines added to or removed
//! from a group that already ran (a scale, a rollout), and what blocks a bundle's deletion.
//!
//! Not told as Events: what a condition records with its `lastTransitionTime` (a cluster turning Ready), and the
//! machines a group is first brought up with (the conditions count them). One Event per cluster would be a tenth
//! of the writes of bringing a fleet up.
//!
//! A reconcile collects them in its [`Outcome`](crate::outcome::Outcome); the runner publishes them after the
//! object's status is written, so an Event never tells of a state the status does not show yet.

use kube::Resource;
use kube::runtime::events::{Event, EventType};
use slipway_api::conditions;
use tracing::warn;

use crate::context::Context;

pub fn normal(reason: &str, action: &str, note: impl Into<String>) -> Event {
    event(EventType::Normal, reason, action, note.into())
}

pub fn warning(reason: &str, action: &str, note: impl Into<String>) -> Event {
    event(EventType::Warning, reason, action, note.into())
}

fn event(type_: EventType, reason: &str, action: &str, note: String) -> Event {
    Event {
        type_,
        reason: reason.into(),
        // The apiserver refuses notes over 1 kB.
        note: Some(conditions::truncate_message(note)),
        action: action.into(),
        secondary: None,
    }
}

/// Events for the machines one step of a group created and deleted. Creations in a group that had no machine
/// before the step are left out (see the module comment); deletions are always told.
pub fn machine_changes(
    group: &str,
    had_machines: bool,
    created: &[String],
    deleted: &[String],
) -> Vec<Event> {
    let mut events = Vec::new();
    if had_machines && !created.is_empty() {
        let prefix = format!("created {} {group} machines: ", created.len());
        let note = format!("{prefix}{}", names_within_note(created, &prefix));
        events.push(normal("MachinesCreated", "Scale", note));
    }
    if !deleted.is_empty() {
        let prefix = format!("deleting {} {group} machines: ", deleted.len());
        let note = format!("{prefix}{}", names_within_note(deleted, &prefix));
        events.push(normal("MachinesDeleted", "Scale", note));
    }
    events
}

/// Machine names for an Event's note after `prefix`, within the apiserver's 1 kB.
fn names_within_note(names: &[String], prefix: &str) -> String {
    conditions::join_truncated_within(
        names,
        ", ",
        conditions::MAX_MESSAGE_CHARS.saturating_sub(prefix.len()),
    )
}

/// Publishes `events` about `obj`; a failure is logged and not retried (an Event is a courtesy, the status is the
/// record).
pub async fn publish<K>(ctx: &Context, obj: &K, events: Vec<Event>)
where
    K: Resource<DynamicType = ()>,
{
    if events.is_empty() {
        return;
    }
    let reference = obj.object_ref(&());
    for event in events {
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            warn!(%error, reason = %event.reason, "could not publish an event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("w-abc1234-{i}")).collect()
    }

    #[test]
    fn a_group_brought_up_from_nothing_gets_no_creation_event_but_deletions_always_do() {
        assert!(machine_changes("worker", false, &names(3), &[]).is_empty());
        let scaled = machine_changes("worker", true, &names(2), &[]);
        assert_eq!(scaled.len(), 1);
        assert_eq!(scaled[0].reason, "MachinesCreated");
        assert_eq!(
            scaled[0].note.as_deref(),
            Some("created 2 worker machines: w-abc1234-0, w-abc1234-1")
        );
        let deleted = machine_changes("worker", false, &[], &names(1));
        assert_eq!(deleted.len(), 1);
        assert_eq!(deleted[0].reason, "MachinesDeleted");
    }

    #[test]
    fn a_note_naming_many_machines_stays_within_the_apiservers_limit() {
        let events = machine_changes("worker", true, &names(500), &names(500));
        for event in events {
            let note = event.note.unwrap();
            assert!(
                note.chars().count() <= conditions::MAX_MESSAGE_CHARS,
                "{}",
                note.len()
            );
            assert!(note.ends_with("more"), "{note}");
        }
    }
}
