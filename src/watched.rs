//! The list of watched REST methods, in one place (design §3.1). A method not listed here is
//! never interpreted: it passes through untouched.

/// A REST method the proxy audits or inspects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Watched {
    SolutionUpdate,
    SolutionAdd,
    SolutionDelete,
    /// `crm.type.add` / `crm.type.update`: watched when they touch workplace bindings.
    TypeAdd,
    TypeUpdate,
    /// `crm.type.delete`: deleting a smart process unbinds it from its workplace.
    TypeDelete,
    /// `batch`: watched whenever any command in it is.
    Batch,
}

impl Watched {
    /// Looks up a method name already normalised by `rest::route` (lower-case, no suffix).
    pub fn of(method: &str) -> Option<Watched> {
        Some(match method {
            "crm.automatedsolution.update" => Watched::SolutionUpdate,
            "crm.automatedsolution.add" => Watched::SolutionAdd,
            "crm.automatedsolution.delete" => Watched::SolutionDelete,
            "crm.type.add" => Watched::TypeAdd,
            "crm.type.update" => Watched::TypeUpdate,
            "crm.type.delete" => Watched::TypeDelete,
            "batch" => Watched::Batch,
            _ => return None,
        })
    }

    /// The canonical method name, as forwarded and as used in metric labels.
    pub fn method(self) -> &'static str {
        match self {
            Watched::SolutionUpdate => "crm.automatedsolution.update",
            Watched::SolutionAdd => "crm.automatedsolution.add",
            Watched::SolutionDelete => "crm.automatedsolution.delete",
            Watched::TypeAdd => "crm.type.add",
            Watched::TypeUpdate => "crm.type.update",
            Watched::TypeDelete => "crm.type.delete",
            Watched::Batch => "batch",
        }
    }

    /// Every watched method, for metric pre-registration.
    pub const ALL: [Watched; 7] = [
        Watched::SolutionUpdate,
        Watched::SolutionAdd,
        Watched::SolutionDelete,
        Watched::TypeAdd,
        Watched::TypeUpdate,
        Watched::TypeDelete,
        Watched::Batch,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for w in Watched::ALL {
            assert_eq!(Watched::of(w.method()), Some(w));
        }
        assert_eq!(Watched::of("crm.automatedsolution.get"), None);
        assert_eq!(Watched::of("crm.deal.list"), None);
    }
}
