//! Splitting a request refused as too large (HTTP 413, gRPC "message larger than max").
//!
//! The sink keeps a stack of [`Parts`] of its batch: it starts with the whole batch; a part
//! refused as too large is replaced by its two halves (the first is sent first, so the order
//! of the events is kept), recursively; a part of one event that is still too large cannot be
//! split ([`Parts::split`] hands it back) and is rejected by the sink, naming its size. A part
//! is whatever the sink can make a request of: a range of indices ([`halves`]) or the events
//! themselves ([`halves_of_vec`]).

use std::ops::Range;

/// The parts of a batch still to send, in order. See the module docs.
#[derive(Debug)]
pub struct Parts<T> {
    /// Last out first: the next part is at the end.
    todo: Vec<T>,
}

impl<T> Parts<T> {
    /// The whole batch, as one part.
    pub fn new(whole: T) -> Self {
        Self { todo: vec![whole] }
    }

    /// The next part to send.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<T> {
        self.todo.pop()
    }

    /// A part was refused as too large: its halves (`halve` returns `Err(part)` for a part
    /// that cannot be split: one event) go first. `Err(part)`: reject it.
    pub fn split(&mut self, part: T, halve: impl FnOnce(T) -> Result<(T, T), T>) -> Result<(), T> {
        let (a, b) = halve(part)?;
        self.todo.push(b);
        self.todo.push(a);
        Ok(())
    }

    /// Parts left, not counting the one being sent.
    pub fn len(&self) -> usize {
        self.todo.len()
    }

    pub fn is_empty(&self) -> bool {
        self.todo.is_empty()
    }

    /// What is left (when the sink must give up).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.todo.drain(..).rev()
    }
}

/// The halves of a range of two items or more.
pub fn halves(r: Range<usize>) -> Result<(Range<usize>, Range<usize>), Range<usize>> {
    if r.len() < 2 {
        return Err(r);
    }
    let mid = r.start + r.len() / 2;
    Ok((r.start..mid, mid..r.end))
}

/// The halves of a vector of two items or more.
pub fn halves_of_vec<T>(mut v: Vec<T>) -> Result<(Vec<T>, Vec<T>), Vec<T>> {
    if v.len() < 2 {
        return Err(v);
    }
    let second = v.split_off(v.len() / 2);
    Ok((v, second))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends event sizes to a receiver that refuses requests over `limit` bytes.
    fn deliver(sizes: &[usize], limit: usize) -> (Vec<Vec<usize>>, Vec<usize>) {
        let mut parts = Parts::new(0..sizes.len());
        let (mut sent, mut rejected) = (Vec::new(), Vec::new());
        while let Some(p) = parts.next() {
            let bytes: usize = sizes[p.clone()].iter().sum();
            if bytes <= limit {
                sent.push(sizes[p].to_vec());
            } else if let Err(one) = parts.split(p, halves) {
                rejected.extend_from_slice(&sizes[one]);
            }
        }
        (sent, rejected)
    }

    #[test]
    fn too_large_parts_are_halved_until_they_fit() {
        let sizes: Vec<usize> = (0..1000).map(|i| 10 + i % 7).collect();
        let (sent, rejected) = deliver(&sizes, 1000);
        assert!(rejected.is_empty());
        assert_eq!(sent.concat(), sizes, "everything, once, in order");
        assert!(sent.len() > 1 && sent.iter().all(|p| p.iter().sum::<usize>() <= 1000));
        // One event over the limit is rejected; its neighbours get through.
        let sizes = [5, 5, 5000, 5, 5];
        let (sent, rejected) = deliver(&sizes, 100);
        assert_eq!(rejected, vec![5000]);
        assert_eq!(sent.concat(), vec![5, 5, 5, 5]);
        let (sent, rejected) = deliver(&[], 100);
        assert!(rejected.is_empty() && sent == vec![Vec::<usize>::new()]);
    }

    #[test]
    fn vectors_and_what_is_left() {
        assert_eq!(halves_of_vec(vec![1, 2, 3]), Ok((vec![1], vec![2, 3])));
        assert_eq!(halves_of_vec(vec![1]), Err(vec![1]));
        let mut p = Parts::new(vec![1, 2, 3, 4]);
        let w = p.next().unwrap_or_default();
        assert!(p.split(w, halves_of_vec).is_ok());
        assert_eq!(p.len(), 2);
        let first = p.next();
        assert_eq!(first, Some(vec![1, 2]));
        assert_eq!(p.drain().collect::<Vec<_>>(), vec![vec![3, 4]]);
        assert!(p.is_empty());
    }
}
