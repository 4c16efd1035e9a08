//! `c_structs!`: Rust twins of C structs of the headers, viewable as bytes.

/// Declares `#[repr(C)]` structs mirroring C structs of a header, each
/// made only of integers and arrays of integers, and implements
/// [`plain::Plain`] for them (so map keys and values are read from and
/// written as bytes without hand-counted offsets).
///
/// Each struct is checked **at compile time** to have no padding: its size
/// is the sum of its fields' sizes, so every byte of a value is initialised
/// and viewing it as bytes is sound. A C change that adds padding must add
/// an explicit pad field here (and in C). That the fields and offsets match
/// the C struct is checked against the BTF of the compiled program by a
/// unit test of `flowpin-bpf-progs`.
macro_rules! c_structs {
    ($(
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty ),* $(,)?
        }
    )*) => {
        $(
            $(#[$meta])*
            #[repr(C)]
            #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
            pub struct $name {
                $( $(#[$fmeta])* pub $field: $ty ),*
            }

            const _: () = assert!(
                ::core::mem::size_of::<$name>() == 0 $(+ ::core::mem::size_of::<$ty>())*,
                concat!(
                    stringify!($name),
                    " has padding: add an explicit pad field (in C and here)"
                )
            );

            // SAFETY: a #[repr(C)] struct of integers and arrays of integers
            // (every bit pattern is a valid value) without padding (the
            // assertion above: its size is the sum of its fields'), so all
            // of its bytes are initialised and any bytes of its size are a
            // value of it.
            #[allow(unsafe_code)]
            unsafe impl ::plain::Plain for $name {}
        )*
    };
}
