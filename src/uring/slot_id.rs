//! How a completion finds its connection: the slot's index and
//! generation, and the operation, packed into the 64 bits of user data
//! the kernel hands back with it.

/// Names a slot across reuse: a stale completion never reaches the
/// connection that took the slot next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotId {
    pub(super) index: u32,
    pub(super) generation: u32,
}

impl SlotId {
    pub fn user_data(self, op: u64) -> u64 {
        (u64::from(self.generation) << 32) | (u64::from(self.index) << 8) | op
    }

    pub fn from_user_data(data: u64) -> (Self, u64) {
        let id = SlotId {
            index: ((data >> 8) & 0xff_ffff) as u32,
            generation: (data >> 32) as u32,
        };
        (id, data & 0xff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_gives_back_the_slot_and_the_operation() {
        for (index, generation, op) in [(0, 0, 1), (0xff_ffff, u32::MAX, 3), (77, 5, 2)] {
            let id = SlotId { index, generation };
            assert_eq!(SlotId::from_user_data(id.user_data(op)), (id, op));
        }
    }
}
