//! The cases, one function each, grouped by spec section.

mod adapters;
mod close;
mod combinators;
mod concurrency;
pub(crate) mod data;
mod drops;
pub(crate) mod eof;
mod errors;

use crate::FlowFactory;
use crate::case::{CaseId, Kit};
use crate::util::CaseResult;

/// Runs `case`.
pub(crate) async fn dispatch<F: FlowFactory>(kit: &Kit<'_, F>, case: CaseId) -> CaseResult {
    use CaseId::*;
    match case {
        A1 => data::a1(kit).await,
        A2 => data::a2(kit).await,
        A3 => data::a3(kit).await,
        A4 => data::a4(kit).await,
        A5 => data::a5(kit).await,
        A6 => data::a6(kit).await,
        B1 => eof::b1(kit).await,
        B2 => eof::b2(kit).await,
        B3 => eof::b3(kit).await,
        B4 => eof::b4(kit).await,
        B5 => eof::b5(kit).await,
        B6 => eof::b6(kit).await,
        B7 => eof::b7(kit).await,
        B8 => eof::b8(kit).await,
        B9 => eof::b9(kit).await,
        C1 => close::c1(kit).await,
        C2 => close::c2(kit).await,
        C3 => close::c3(kit).await,
        C4 => close::c4(kit).await,
        C5 => close::c5(kit).await,
        C6 => close::c6(kit).await,
        C7 => close::c7(kit).await,
        D1 => errors::d1(kit).await,
        D2 => errors::d2(kit).await,
        D3 => errors::d3(kit).await,
        D4 => errors::d4(kit).await,
        E1 => concurrency::e1(kit).await,
        E2 => concurrency::e2(kit).await,
        E3 => concurrency::e3(kit).await,
        E4 => concurrency::e4(kit).await,
        F1 => drops::f1(kit).await,
        F2 => drops::f2(kit).await,
        F3 => drops::f3(kit).await,
        G1 => adapters::g1(kit).await,
        G2 => adapters::g2(kit).await,
        J1 => combinators::j1(kit).await,
        J2 => combinators::j2(kit).await,
        J3 => combinators::j3(kit).await,
    }
}
