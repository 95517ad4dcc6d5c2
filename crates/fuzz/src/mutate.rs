//! The mutator: a deterministic random stream and the ways an input is changed.

/// xoshiro256** seeded through splitmix64: small, fast, and the same stream on
/// every platform, so a seed replays the same inputs.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

/// splitmix64's step, also used to derive sub-seeds.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut state = seed;
        Rng {
            s: [
                splitmix64(&mut state),
                splitmix64(&mut state),
                splitmix64(&mut state),
                splitmix64(&mut state),
            ],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A length for a range, mostly small: 1..=max, skewed towards 1..8.
    pub fn small_len(&mut self, max: usize) -> usize {
        let max = max.max(1);
        let cap = match self.below(4) {
            0..=1 => 8,
            2 => 64,
            _ => max,
        };
        1 + self.below(cap.min(max))
    }
}

/// Numbers that break parsers: signs, limits of every integer width, the
/// limits and specials of floats, huge exponents.
pub const EXTREME_NUMBERS: &[&str] = &[
    "-1",
    "0",
    "-0",
    "1",
    "0.5",
    "-0.5",
    "1e-45",
    "1e308",
    "-1e308",
    "1e309",
    "1e-400",
    "3.4028236e38",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "Infinity",
    "127",
    "255",
    "256",
    "32767",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "-2147483649",
    "4294967295",
    "4294967296",
    "9007199254740993",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999999999999",
    "1e999999999",
    "0x10",
    "1_000",
    "+5",
    ".5",
    "5.",
    "1e",
    "--1",
];

/// Binary values for 1, 2, 4 and 8-byte fields (lengths, sizes, offsets).
const EXTREME_INTS: &[u64] = &[
    0,
    1,
    0x7F,
    0x80,
    0xFF,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    0x1_0000_0000,
    0x7FFF_FFFF_FFFF_FFFF,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 7,
    4096,
    1 << 20,
    1 << 30,
];

/// One input changed by 1..16 stacked mutations; `pool` supplies splice
/// partners, `dictionary` the target's tokens, `structured` the target's own
/// mutation (which knows its format's length fields), if any.
pub fn mutate(
    base: &[u8],
    pool: &[Vec<u8>],
    dictionary: &[&[u8]],
    structured: Option<fn(&mut Vec<u8>, &mut Rng)>,
    max_len: usize,
    rng: &mut Rng,
) -> Vec<u8> {
    let mut data = base.to_vec();
    let rounds = if rng.one_in(4) {
        1 + rng.below(16)
    } else {
        1 + rng.below(4)
    };
    for _ in 0..rounds {
        mutate_once(&mut data, pool, dictionary, structured, rng);
        if data.len() > max_len {
            data.truncate(max_len);
        }
    }
    data
}

fn mutate_once(
    data: &mut Vec<u8>,
    pool: &[Vec<u8>],
    dictionary: &[&[u8]],
    structured: Option<fn(&mut Vec<u8>, &mut Rng)>,
    rng: &mut Rng,
) {
    let len = data.len();
    match rng.below(14) {
        // Flip one bit.
        0 if len > 0 => {
            let at = rng.below(len);
            data[at] ^= 1 << rng.below(8);
        }
        // Set one byte to an interesting or random value.
        1 if len > 0 => {
            let at = rng.below(len);
            data[at] = match rng.below(6) {
                0 => 0,
                1 => 0xFF,
                2 => 0x7F,
                3 => 0x80,
                _ => rng.next_u64() as u8,
            };
        }
        // Insert random bytes (or one repeated byte).
        2 => {
            let at = rng.below(len + 1);
            let n = rng.small_len(32);
            let bytes: Vec<u8> = if rng.one_in(2) {
                vec![rng.next_u64() as u8; n]
            } else {
                (0..n).map(|_| rng.next_u64() as u8).collect()
            };
            data.splice(at..at, bytes);
        }
        // Delete a range.
        3 if len > 0 => {
            let at = rng.below(len);
            let n = rng.small_len(len - at);
            data.drain(at..at + n);
        }
        // Truncate.
        4 if len > 0 => data.truncate(rng.below(len)),
        // Splice: the head of this input, the tail of another.
        5 if !pool.is_empty() => {
            let other = rng.pick(pool);
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        // Insert a token of the format.
        6 if !dictionary.is_empty() => {
            let token = *rng.pick(dictionary);
            let at = token_boundary(data, rng);
            data.splice(at..at, token.iter().copied());
        }
        // Replace a number with an extreme one.
        7 => replace_number(data, rng),
        // Duplicate a range, possibly many times (deep nesting, long rows).
        8 if len > 0 => {
            let at = rng.below(len);
            let n = rng.small_len((len - at).min(256));
            let chunk = data[at..at + n].to_vec();
            let times = if rng.one_in(4) { 1 + rng.below(300) } else { 1 };
            let to = rng.below(len + 1);
            let repeated: Vec<u8> = chunk.iter().copied().cycle().take(n * times).collect();
            data.splice(to..to, repeated);
        }
        // Overwrite a binary integer field with an extreme value.
        9 if len > 0 => {
            let width = *rng.pick(&[1usize, 2, 4, 8]);
            let value = *rng.pick(EXTREME_INTS);
            let bytes = if rng.one_in(2) {
                value.to_le_bytes()
            } else {
                value.to_be_bytes()
            };
            let bytes = if bytes[0] == (value as u8) {
                &bytes[..width]
            } else {
                &bytes[8 - width..]
            };
            let at = rng.below(len);
            for (i, &b) in bytes.iter().enumerate() {
                if let Some(slot) = data.get_mut(at + i) {
                    *slot = b;
                }
            }
        }
        // Copy a range over another place.
        10 if len > 1 => {
            let from = rng.below(len);
            let n = rng.small_len(len - from);
            let chunk = data[from..from + n].to_vec();
            let to = rng.below(len);
            for (i, b) in chunk.into_iter().enumerate() {
                if let Some(slot) = data.get_mut(to + i) {
                    *slot = b;
                }
            }
        }
        // Swap two lines (rows, elements).
        11 => swap_lines(data, rng),
        // The target's own, format-aware mutation.
        12 | 13 if structured.is_some() => (structured.expect("checked"))(data, rng),
        _ => {
            // The chosen mutation did not apply (empty input etc.): append a token or a byte.
            if !dictionary.is_empty() && rng.one_in(2) {
                let token: &[u8] = dictionary[rng.below(dictionary.len())];
                data.extend_from_slice(token);
            } else {
                data.push(rng.next_u64() as u8);
            }
        }
    }
}

/// A position just before or after a punctuation byte, or anywhere.
fn token_boundary(data: &[u8], rng: &mut Rng) -> usize {
    if data.is_empty() {
        return 0;
    }
    let at = rng.below(data.len() + 1);
    if rng.one_in(3) {
        return at;
    }
    data[at..]
        .iter()
        .position(|b| b"{}[]<>,:\n\" ".contains(b))
        .map_or(at, |i| at + i + usize::from(rng.one_in(2)))
}

/// Replaces an ASCII number (digits with an optional sign, point and
/// exponent) with one of [`EXTREME_NUMBERS`]; inserts one when there is none.
fn replace_number(data: &mut Vec<u8>, rng: &mut Rng) {
    let number = *rng.pick(EXTREME_NUMBERS);
    let starts: Vec<usize> = (0..data.len())
        .filter(|&i| data[i].is_ascii_digit() && (i == 0 || !is_number_byte(data[i - 1])))
        .collect();
    if starts.is_empty() {
        let at = rng.below(data.len() + 1);
        data.splice(at..at, number.bytes());
        return;
    }
    let mut start = *rng.pick(&starts);
    if start > 0 && data[start - 1] == b'-' {
        start -= 1;
    }
    let mut end = start + 1;
    while end < data.len() && is_number_byte(data[end]) {
        end += 1;
    }
    data.splice(start..end, number.bytes());
}

fn is_number_byte(b: u8) -> bool {
    b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')
}

/// Swaps two `\n`-separated lines, or duplicates one.
fn swap_lines(data: &mut Vec<u8>, rng: &mut Rng) {
    let mut bounds = vec![0];
    bounds.extend(
        data.iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .map(|(i, _)| i + 1),
    );
    bounds.push(data.len());
    bounds.dedup();
    let lines: Vec<Vec<u8>> = bounds
        .windows(2)
        .map(|w| data[w[0]..w[1]].to_vec())
        .collect();
    if lines.is_empty() {
        return;
    }
    let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
    let mut lines = lines;
    if rng.one_in(3) {
        let copy = lines[a].clone();
        lines.insert(b, copy);
    } else {
        lines.swap(a, b);
    }
    *data = lines.concat();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_deterministic() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let pool = vec![b"{\"a\": [1, 2, 3]}".to_vec(), b"x,y\n1,2\n".to_vec()];
        for _ in 0..1000 {
            let pick = a.below(2);
            assert_eq!(b.below(2), pick);
            let base = pool[pick].clone();
            let x = mutate(&base, &pool, &[b"null"], None, 4096, &mut a);
            let y = mutate(&base, &pool, &[b"null"], None, 4096, &mut b);
            assert_eq!(x, y);
            assert!(x.len() <= 4096);
        }
    }

    #[test]
    fn numbers_are_replaced_whole() {
        let mut rng = Rng::new(1);
        for _ in 0..100 {
            let mut data = b"[-12.5e3, 7]".to_vec();
            replace_number(&mut data, &mut rng);
            let text = String::from_utf8(data).unwrap();
            assert!(text.starts_with('[') && text.ends_with(']'), "{text}");
            assert!(!text.contains("12.5e3") || !text.contains(" 7]"), "{text}");
        }
    }
}
