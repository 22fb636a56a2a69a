//! `backroom`: the all-in-one launcher (`backroom up`) and the invariant
//! checker (`backroom audit`, [`audit`]).

pub mod audit;
