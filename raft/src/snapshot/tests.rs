//! The stream format on its own: reading with seeks back, receiving in any pieces, and
//! refusing what is not a whole, checked stream.

use tally_storage::{Database, MemDb};

use super::*;
use crate::audit::ChainLink;
use crate::model::{PollId, VoteRecord, VoterId};

/// A block of `records` votes whose voter ids are `id_len` bytes long.
fn block(seq: u64, records: usize, id_len: usize) -> Vec<u8> {
    let votes: Vec<VoteRecord> = (0..records)
        .map(|slot| VoteRecord {
            voter_id: VoterId(format!("{seq}-{slot}-{}", "v".repeat(id_len))),
            vote_key: u128::from(seq) << 80 | slot as u128,
            option_index: 0,
            idempotency_key: format!("k{slot}"),
            attributes: Default::default(),
            recorded_at_ms: seq as i64,
            chain: ChainLink { position: slot as u64, hash: [seq as u8; 32] },
            replaces: None,
            changes: 0,
            log_index: seq,
        })
        .collect();
    records::stored_block(&PollId("p".into()), seq, &records::encode_block(&votes).unwrap())
}

/// A journal of `n` blocks of different sizes (`id_len` sets how large), and a stream
/// over it.
fn stream_of_sized(n: u64, id_len: usize) -> (MemDb, Outgoing) {
    let db = MemDb::new();
    let journal = db.journal("blocks").unwrap();
    journal.append((1..=n).map(|seq| (seq, block(seq, 1 + seq as usize % 7, id_len))).collect()).unwrap();
    let state = State::default();
    let head =
        head_bytes(&HeaderRef { state: &state, last_applied: &None, membership: &Default::default(), blocks: n })
            .unwrap();
    let source = JournalAt { journal, generation: Arc::new(AtomicU64::new(0)), expected: 0 };
    (db, Outgoing::new(Arc::new(head), source, n))
}

fn stream_of(n: u64) -> (MemDb, Outgoing) {
    stream_of_sized(n, 40)
}

/// An empty journal to receive into, and a receipt into it that `generation` can end.
fn receipt(db: &MemDb, generation: &Arc<AtomicU64>) -> (Arc<dyn Journal>, Incoming) {
    let sink = db.journal("in").unwrap();
    let at = JournalAt { journal: sink.clone(), generation: generation.clone(), expected: 0 };
    (sink, Incoming::new(Some(at)))
}

fn read_at(stream: &mut Outgoing, pos: u64, len: usize) -> Vec<u8> {
    stream.seek_to(pos);
    let mut out = Vec::new();
    let mut buf = vec![0; len];
    while out.len() < len {
        let n = stream.read_sync(&mut buf[..len - out.len()]).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

#[test]
fn a_stream_reads_the_same_bytes_whatever_the_seeks() {
    let (_db, mut stream) = stream_of(40);
    let len = stream.len() as usize;
    let whole = read_at(&mut stream, 0, len + 10);
    assert_eq!(whole.len() as u64, stream.len(), "the announced length is the length read");
    // Back to the start, into an earlier page, forward past pages, and back again.
    for (pos, len) in [(0, 5), (3000, 7000), (20, 100), (len as u64 - 9, 50), (1500, 20000), (0, whole.len())] {
        let got = read_at(&mut stream, pos, len);
        let end = (pos as usize + len).min(whole.len());
        assert_eq!(got, whole[pos as usize..end], "at {pos}");
    }
    let mut check = Incoming::new(None);
    check.write_sync(&whole).unwrap();
    assert_eq!(check.finish().unwrap().blocks, 40);
}

#[test]
fn pieces_of_any_size_and_resent_pieces_arrive_whole() {
    let (source_db, mut stream) = stream_of(25);
    let len = stream.len() as usize;
    let whole = read_at(&mut stream, 0, len);
    let db = MemDb::new();
    let (sink, mut incoming) = receipt(&db, &Arc::new(AtomicU64::new(0)));
    let mut at = 0;
    let mut step = 1;
    while at < whole.len() {
        let end = (at + step).min(whole.len());
        incoming.seek_to(at as u64);
        incoming.write_sync(&whole[at..end]).unwrap();
        // Every third piece is sent again, from where it started.
        if step % 3 == 0 {
            incoming.seek_to(at as u64);
            incoming.write_sync(&whole[at..end]).unwrap();
        }
        at = end;
        step = step * 2 % 4099 + 1;
    }
    assert_eq!(incoming.finish().unwrap().blocks, 25);
    let original = source_db.journal("blocks").unwrap().read(1, 26).unwrap();
    assert_eq!(sink.read(1, 26).unwrap(), original, "the blocks arrive as they were");
}

#[test]
fn what_is_not_a_whole_checked_stream_is_refused() {
    let (_db, mut stream) = stream_of(5);
    let len = stream.len() as usize;
    let whole = read_at(&mut stream, 0, len);
    let receive = |bytes: &[u8]| {
        let mut incoming = Incoming::new(None);
        incoming.write_sync(bytes).map_err(|e| e.to_string()).and_then(|_| incoming.finish().map(drop))
    };
    assert!(receive(&whole).is_ok());
    assert!(receive(&whole[..whole.len() - 1]).is_err(), "cut short");
    assert!(receive(&[whole.as_slice(), b"x"].concat()).is_err(), "bytes after the last block");
    assert!(receive(&whole[..MAGIC.len() + 3]).is_err(), "no header");
    for at in [0, MAGIC.len() + 1, MAGIC.len() + 9, whole.len() / 2, whole.len() - 1] {
        let mut damaged = whole.clone();
        damaged[at] ^= 0x10;
        assert!(receive(&damaged).is_err(), "a flipped bit at {at}");
    }
    // A gap: a piece from beyond what arrived.
    let mut incoming = Incoming::new(None);
    incoming.write_sync(&whole[..10]).unwrap();
    incoming.seek_to(20);
    assert!(incoming.write_sync(&whole[20..30]).is_err());
    // A length beyond the limit fails at once, before waiting for its bytes: the header's
    // limit for the first frame, a block's after it.
    let mut huge = MAGIC.to_vec();
    huge.extend_from_slice(&(HEADER_BYTES_MAX + 1).to_le_bytes());
    huge.extend_from_slice(&[0; 4]);
    assert!(Incoming::new(None).write_sync(&huge).is_err());
    let head_len = stream.head().len();
    let mut huge = whole[..head_len].to_vec();
    huge.extend_from_slice(&(FRAME_BYTES_MAX + 1).to_le_bytes());
    huge.extend_from_slice(&[0; 4]);
    assert!(Incoming::new(None).write_sync(&huge).is_err());
}

#[test]
fn a_stream_whose_journal_was_replaced_fails_instead_of_sending_other_blocks() {
    // Blocks of about 100 KB: the stream is several pages.
    let (_db, mut stream) = stream_of_sized(40, 20_000);
    assert!(stream.len() > 3 * PAGE_BYTES as u64);
    let head_len = stream.head().len() as u64;
    assert!(!read_at(&mut stream, head_len, 10).is_empty());
    stream.source.generation.fetch_add(1, Ordering::AcqRel);
    // The window already read is whole and still served; the next page is not.
    stream.seek_to(stream.len() - 1);
    let mut buf = [0; 8];
    let error = stream.read_sync(&mut buf).unwrap_err();
    assert!(error.to_string().contains("replaced"), "{error}");
}

#[test]
fn a_failed_receipt_starts_again_from_offset_zero() {
    let (_db, mut stream) = stream_of(6);
    let len = stream.len() as usize;
    let whole = read_at(&mut stream, 0, len);
    let db = MemDb::new();
    let (sink, mut incoming) = receipt(&db, &Arc::new(AtomicU64::new(0)));
    let mut damaged = whole.clone();
    damaged[len - 2] ^= 1;
    incoming.write_sync(&damaged).unwrap_err();
    incoming.seek_to(30);
    assert!(incoming.write_sync(&whole[30..]).is_err(), "a failed receipt refuses what follows");
    incoming.seek_to(0);
    incoming.write_sync(&whole).unwrap();
    assert_eq!(incoming.finish().unwrap().blocks, 6);
    assert_eq!(sink.read(1, 7).unwrap().len(), 6);
}

#[test]
fn a_receipt_into_a_journal_another_receipt_took_over_fails() {
    let (_db, mut stream) = stream_of(20);
    let len = stream.len() as usize;
    let whole = read_at(&mut stream, 0, len);
    let db = MemDb::new();
    let generation = Arc::new(AtomicU64::new(0));
    let (_, mut incoming) = receipt(&db, &generation);
    incoming.write_sync(&whole[..len / 2]).unwrap();
    generation.fetch_add(1, Ordering::AcqRel);
    let refused = incoming.write_sync(&whole[len / 2..]).is_err() || incoming.finish().is_err();
    assert!(refused);
}
