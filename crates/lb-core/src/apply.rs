//! Writing a plan: [`apply`] hands the [`MapOp`]s of a
//! [`Plan`](crate::Plan) to a [`MapWriter`] in order and, if one fails,
//! undoes what was written in reverse order, so the maps are back at the
//! previous configuration and the error says whether that worked.

use std::fmt;

use crate::MapOp;

/// Something that takes map operations one at a time: the kernel maps
/// (`flowpin_bpf_progs::xdp_lb::KernelMaps`), or an in-memory model in tests.
pub trait MapWriter {
    /// Why a write failed.
    type Error: std::error::Error + 'static;

    /// Performs one operation.
    fn write(&mut self, op: &MapOp) -> Result<(), Self::Error>;
}

/// A change that did not fully reach the maps.
#[derive(Debug)]
pub struct ApplyError<E> {
    /// The write that failed.
    pub failed: E,
    /// Its index in the plan.
    pub index: usize,
    /// Operations in the plan.
    pub total: usize,
    /// `None`: every earlier write was undone, the maps hold the previous
    /// configuration. `Some`: undoing failed too.
    pub rollback_failed: Option<Box<E>>,
}

impl<E: fmt::Display> fmt::Display for ApplyError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "map write {} of {} failed: {}; ",
            self.index + 1,
            self.total,
            self.failed
        )?;
        match &self.rollback_failed {
            None => write!(
                f,
                "the earlier writes were undone: the kernel still holds the previous configuration, nothing changed"
            ),
            Some(e) => write!(
                f,
                "undoing the earlier writes failed too ({e}): the kernel maps may be inconsistent; reload the program (XdpLb::load) and configure it again"
            ),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ApplyError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.failed)
    }
}

/// Writes `ops` in order; on a failure, undoes what was written (the
/// failed operation included: a batch may have been partly written).
pub fn apply<W: MapWriter + ?Sized>(
    writer: &mut W,
    ops: &[MapOp],
) -> Result<(), ApplyError<W::Error>> {
    for (index, op) in ops.iter().enumerate() {
        if let Err(failed) = writer.write(op) {
            let mut rollback_failed = None;
            for done in ops[..=index].iter().rev() {
                if let Some(undo) = done.undo() {
                    if let Err(e) = writer.write(&undo) {
                        rollback_failed.get_or_insert(Box::new(e));
                    }
                }
            }
            return Err(ApplyError {
                failed,
                index,
                total: ops.len(),
                rollback_failed,
            });
        }
    }
    Ok(())
}
