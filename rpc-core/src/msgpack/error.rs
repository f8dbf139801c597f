//! The format's error: what went wrong, and where in the value (the path is added as the error
//! leaves each struct field, element and enum, so it costs nothing until something fails).

use std::fmt;

/// An encoding or decoding error with the path to the value it concerns. Boxed: every read
/// returns a `Result`, which stays two words wide.
#[derive(Debug)]
pub(crate) struct Error(Box<Inner>);

#[derive(Debug)]
struct Inner {
    message: String,
    /// Innermost first.
    path: Vec<Segment>,
}

/// One step of the path to the value an error concerns.
#[derive(Debug)]
pub(super) enum Segment {
    /// The field `field` of the struct `ty`.
    Field { ty: &'static str, field: String },
    /// Element `index` of a sequence or tuple.
    Element(usize),
    /// A value of the enum `ty`.
    Enum(&'static str),
    /// The value of a map's entry with this key.
    Key(String),
}

impl Error {
    #[cold]
    pub(super) fn new(message: impl fmt::Display) -> Self {
        Self(Box::new(Inner {
            message: message.to_string(),
            path: Vec::new(),
        }))
    }

    /// This error, which occurred inside `segment`.
    #[cold]
    pub(super) fn within(mut self, segment: Segment) -> Self {
        self.0.path.push(segment);
        self
    }
}

impl Error {
    /// The path from the outermost value, as `[1].stats.score`.
    fn path(&self) -> String {
        let mut path = String::new();
        for segment in self.0.path.iter().rev() {
            match segment {
                Segment::Field { field, .. } | Segment::Key(field) => {
                    path.push('.');
                    path.push_str(field);
                }
                Segment::Element(index) => path.push_str(&format!("[{index}]")),
                Segment::Enum(_) => {}
            }
        }
        path
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)?;
        // The innermost struct or enum names the type the reader could not fill.
        let owner = self.0.path.iter().find_map(|s| match s {
            Segment::Field { ty, field } => Some(format!("field `{field}` of `{ty}`")),
            Segment::Enum(ty) => Some(format!("enum `{ty}`")),
            Segment::Element(_) | Segment::Key(_) => None,
        });
        match (owner, self.0.path.len()) {
            (_, 0) => Ok(()),
            (Some(owner), 1) => write!(f, " (in {owner})"),
            (Some(owner), _) => write!(f, " (in {owner}, at {})", self.path()),
            (None, _) => write!(f, " (at {})", self.path()),
        }
    }
}

impl std::error::Error for Error {}

impl serde::de::Error for Error {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Self::new(message)
    }
}

impl serde::ser::Error for Error {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Self::new(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_names_the_innermost_type_and_reads_outside_in() {
        let error = Error::new("invalid type: string \"x\", expected u32")
            .within(Segment::Field {
                ty: "Stats",
                field: "score".into(),
            })
            .within(Segment::Field {
                ty: "User",
                field: "stats".into(),
            })
            .within(Segment::Element(1));
        assert_eq!(
            error.to_string(),
            "invalid type: string \"x\", expected u32 (in field `score` of `Stats`, at [1].stats.score)"
        );
        let error = Error::new("unknown variant `Gold`").within(Segment::Enum("Tier"));
        assert_eq!(error.to_string(), "unknown variant `Gold` (in enum `Tier`)");
        let error = Error::new("missing").within(Segment::Element(2));
        assert_eq!(error.to_string(), "missing (at [2])");
    }
}
