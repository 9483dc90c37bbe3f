//! `Invariant`: how code that relies on a broken-invariant check says so. Operating errors (I/O, input) are
//! `Result`s and never panic; an `Option`/`Result` that can only be empty or failed if the program itself is wrong
//! (the active segment of a log that always has one, a header just written) is unwrapped with `.invariant("…")`,
//! which panics with the sentence, in release builds too — an `assert!` for values. `unwrap`/`expect` are denied
//! outside tests by the workspace lints, so every such place is named and greppable.

pub trait Invariant<T> {
    /// The value; panics with "broken invariant: {what}" if there is none.
    fn invariant(self, what: &str) -> T;
}

impl<T> Invariant<T> for Option<T> {
    #[track_caller]
    fn invariant(self, what: &str) -> T {
        match self {
            Some(value) => value,
            None => panic!("broken invariant: {what}"),
        }
    }
}

impl<T, E: std::fmt::Debug> Invariant<T> for Result<T, E> {
    #[track_caller]
    fn invariant(self, what: &str) -> T {
        match self {
            Ok(value) => value,
            Err(error) => panic!("broken invariant: {what} ({error:?})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_pass_and_absences_panic_with_the_sentence() {
        assert_eq!(Some(3).invariant("three"), 3);
        assert_eq!(Ok::<_, ()>(4).invariant("four"), 4);
        let panic =
            std::panic::catch_unwind(|| None::<u8>.invariant("the active segment exists")).unwrap_err();
        assert_eq!(panic.downcast_ref::<String>().unwrap(), "broken invariant: the active segment exists");
    }
}
