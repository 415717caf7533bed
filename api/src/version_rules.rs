//! The CEL rules of a Kubernetes version field (`Cluster` `spec.kubernetes.version`, `MachinePool` `spec.version`):
//! its format, and how far one update may move it.
//!
//! The step rules are transition rules (they read `oldSelf`), so the apiserver runs them only on an update where
//! the field had a value before and still has one: creating an object, adding the field or removing it is not a
//! step. They mirror `slipway_controller::version_skew::upgrade_step`, which the controller can apply where CEL
//! cannot see both versions.
//!
//! Why these steps: kube-apiserver members of one control plane may differ by one minor only while it rolls, and
//! Kubernetes does not support going back a minor (storage versions move forward). Patch releases of one minor
//! may be swapped either way.

use kube::core::{Message, Rule};

/// `vMAJOR.MINOR.PATCH`, each number 1 to 9 digits so that CEL's `int()` of it cannot overflow.
const FORMAT: &str = "^v[0-9]{1,9}[.][0-9]{1,9}[.][0-9]{1,9}$";

/// The version must look like `v1.37.2`; `or_else` says what else the field may be (e.g. left out).
pub(crate) fn format(field: &str, or_else: &str) -> Rule {
    Rule::new(format!("self.matches('{FORMAT}')")).message(Message::Message(format!(
        "{field}: must look like v1.37.2 (vMAJOR.MINOR.PATCH){or_else}"
    )))
}

/// `true` when either value is malformed: the format rule reports that, and `int()` of a malformed part
/// would be an evaluation error instead of a message.
fn malformed() -> String {
    format!("!self.matches('{FORMAT}') || !oldSelf.matches('{FORMAT}')")
}

fn major(value: &str) -> String {
    format!("int({value}.split('.')[0].substring(1))")
}

fn minor(value: &str) -> String {
    format!("int({value}.split('.')[1])")
}

/// An update keeps the major version: there is no step from one major to another.
pub(crate) fn same_major(field: &str) -> Rule {
    Rule::new(format!(
        "{} || {} == {}",
        malformed(),
        major("self"),
        major("oldSelf")
    ))
    .message(Message::Expression(format!(
        "'{field}: the major version cannot change (' + oldSelf + ' → ' + self + '); stay on ' + \
         oldSelf.split('.')[0] + ' and upgrade one minor at a time'"
    )))
}

/// An update does not lower the minor version; any patch of the same minor, up or down, is fine.
pub(crate) fn no_minor_downgrade(field: &str) -> Rule {
    Rule::new(format!(
        "{} || {} != {} || {} >= {}",
        malformed(),
        major("self"),
        major("oldSelf"),
        minor("self"),
        minor("oldSelf")
    ))
    .message(Message::Expression(format!(
        "'{field}: cannot go back a minor version (' + oldSelf + ' → ' + self + '), Kubernetes does not \
         support it; set ' + oldSelf.split('.')[0] + '.' + oldSelf.split('.')[1] + '.x or newer'"
    )))
}

/// An update raises the minor version by one at most.
pub(crate) fn one_minor_at_a_time(field: &str) -> Rule {
    Rule::new(format!(
        "{} || {} != {} || {} <= {} + 1",
        malformed(),
        major("self"),
        major("oldSelf"),
        minor("self"),
        minor("oldSelf")
    ))
    // One `format()` call rather than `+` around `string(int)`: the apiserver cannot bound the length of
    // `string(int)`, so concatenating it makes the estimated cost of the message unbounded and the CRD is refused.
    .message(Message::Expression(format!(
        "'{field}: upgrade one minor at a time: %s → %s.%d.x first, then on towards %s'.format([oldSelf, \
         oldSelf.split('.')[0], {} + 1, self])",
        minor("oldSelf")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    // What the rules mean is tested against a real apiserver (tests/admission.rs, the version cases in
    // tests/invalid/ and tests/valid/). Here: the rules name the field they guard, so one function serves both
    // kinds without a message naming the wrong field.
    #[test]
    fn every_rule_names_its_field() {
        for rule in [
            format("spec.version", ""),
            same_major("spec.version"),
            no_minor_downgrade("spec.version"),
            one_minor_at_a_time("spec.version"),
        ] {
            let message = match rule.message {
                Some(Message::Message(text) | Message::Expression(text)) => text,
                None => panic!("rule {} has no message", rule.rule),
            };
            assert!(
                message.starts_with("spec.version: ") || message.starts_with("'spec.version: "),
                "{message}"
            );
        }
    }
}
