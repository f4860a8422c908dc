//! The watched REST methods, in one table: each name, and what kind of call it is — which also
//! says how the proxy reads it. A method not in the table is never interpreted: it passes
//! through untouched.
//!
//! - `crm.automatedsolution.update` / `add` / `delete` — **audited**: read into a `Mutation`,
//!   snapshotted, decided, recorded, forwarded in the proxy's encoding (`pipeline`).
//! - `crm.type.add` / `update` / `delete` — **inspected**: a smart process's own calls can
//!   (un)bind it from a workplace; refused when they would, else forwarded rebuilt.
//! - `batch` — **per command**: audited when any command is watched, else forwarded rebuilt.
//!
//! Adding a watched method is one row here plus its reading in `pipeline::interpret`.

use serde::Serialize;

/// Which change an audited `crm.automatedsolution.*` call makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MutationKind {
    Update,
    Add,
    Delete,
}

impl MutationKind {
    /// The method name, from the table.
    pub fn method(self) -> &'static str {
        Watched::Solution(self).method()
    }
}

/// A `crm.type.*` call: inspected for what it does to workplace bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TypeCall {
    /// `add` / `update`: refused when they touch binding fields.
    Add,
    Update,
    /// `delete`: refused while the smart process is bound to a workplace.
    Delete,
}

/// A REST method the proxy audits or inspects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Watched {
    Solution(MutationKind),
    Type(TypeCall),
    /// `batch`: watched whenever any command in it is.
    Batch,
}

/// The table: every watched method's name and kind. The names are spelled here only.
const TABLE: [(&str, Watched); 7] = [
    (
        "crm.automatedsolution.update",
        Watched::Solution(MutationKind::Update),
    ),
    (
        "crm.automatedsolution.add",
        Watched::Solution(MutationKind::Add),
    ),
    (
        "crm.automatedsolution.delete",
        Watched::Solution(MutationKind::Delete),
    ),
    ("crm.type.add", Watched::Type(TypeCall::Add)),
    ("crm.type.update", Watched::Type(TypeCall::Update)),
    ("crm.type.delete", Watched::Type(TypeCall::Delete)),
    ("batch", Watched::Batch),
];

impl Watched {
    /// Looks up a method name already normalised by `rest::route` (lower-case, no suffix).
    pub fn of(method: &str) -> Option<Watched> {
        TABLE.iter().find(|(n, _)| *n == method).map(|(_, w)| *w)
    }

    /// The canonical method name, as forwarded and as used in metric labels.
    pub fn method(self) -> &'static str {
        // Every value of `Watched` has a row (`every_kind_has_one_row` checks it).
        TABLE
            .iter()
            .find(|(_, w)| *w == self)
            .map_or("batch", |(n, _)| n)
    }

    /// Every watched method, in table order (for metric pre-registration).
    pub fn all() -> impl Iterator<Item = Watched> {
        TABLE.iter().map(|(_, w)| *w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_round_trip() {
        for w in Watched::all() {
            assert_eq!(Watched::of(w.method()), Some(w));
        }
        assert_eq!(Watched::of("crm.automatedsolution.get"), None);
        assert_eq!(Watched::of("crm.deal.list"), None);
        assert_eq!(
            MutationKind::Delete.method(),
            "crm.automatedsolution.delete"
        );
    }

    #[test]
    fn every_kind_has_one_row() {
        let kinds = [
            Watched::Solution(MutationKind::Update),
            Watched::Solution(MutationKind::Add),
            Watched::Solution(MutationKind::Delete),
            Watched::Type(TypeCall::Add),
            Watched::Type(TypeCall::Update),
            Watched::Type(TypeCall::Delete),
            Watched::Batch,
        ];
        let names: HashSet<&str> = TABLE.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), TABLE.len(), "a name is listed twice");
        for k in kinds {
            assert_eq!(TABLE.iter().filter(|(_, w)| *w == k).count(), 1, "{k:?}");
        }
    }
}
