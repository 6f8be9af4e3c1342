"""CIDs and bytes must be exactly what IPFS computes: published vectors, byte for byte.

dag-cbor vectors are from the IPLD codec-fixtures (github.com/ipld/codec-fixtures,
`fixtures/<name>/<cid>.dag-cbor`), generated and cross-checked by the Go (go-ipld-prime,
which Kubo uses) and JS reference codecs. Raw-block CIDs are what `ipfs add --raw-leaves
--cid-version 1` / `ipfs block put` print for the same bytes.
"""

from __future__ import annotations

from typing import Any

import pytest

from qflow_node.codec import (
    CID,
    DAG_CBOR,
    RAW,
    CidError,
    cid_codec,
    cid_for,
    dag_block,
    decode_block,
    decode_dag,
    encode_dag,
    parse_cid,
    raw_block,
)


def link(text: str) -> CID:
    return parse_cid(text)


# (fixture name, CID, canonical bytes as hex, Python value)
DAG_CBOR_VECTORS: list[tuple[str, str, str, Any]] = [
    ("map-empty", "bafyreigbtj4x7ip5legnfznufuopl4sg4knzc2cof6duas4b3q2fy6swua", "a0", {}),
    ("array-empty", "bafyreidwx2fvfdiaox32v2mnn6sxu3j4qoxeqcuenhtgrv5qv6litfnmoe", "80", []),
    ("string-empty", "bafyreiengp2sbi6ez34a2jctv34bwyjl7yoliteleaswgcwtqzrhmpyt2m", "60", ""),
    ("bytes-empty", "bafyreigdmqpykrgxyaxtlafqpqhzrb7qy2rh75nldvfd4kok6gl47quzvy", "40", b""),
    ("null", "bafyreifqwkmiw256ojf2zws6tzjeonw6bpd5vza4i22ccpcq4hjv2ts7cm", "f6", None),
    ("true", "bafyreibhvppn37ufanewvxvwendgzksh3jpwhk6sxrx2dh3m7s3t5t7noa", "f5", True),
    ("false", "bafyreibac77tiyjzkzzkucve6zejj7jpswslcihcnehisulfnv423qxo2i", "f4", False),
    ("int-0", "bafyreidogqfzz75tpkmjzjke425xqcrmpcib2p5tg44hnbirumdbpl5adu", "00", 0),
    ("int--1", "bafyreibwvht7dsk3ql73tf2d4dc4jtuv3a6juqykvrm7qtxtzp5lmfcqna", "20", -1),
    ("int-255", "bafyreih4vluto2froiw457akazzjhcfm7y22juemxx6jsyyjufp227tcv4", "18ff", 255),
    (
        "int-65536",
        "bafyreibjfaasdb7qgrdnd2pmg7noltevqzswyif5nyup6sktdanzgpft6a",
        "1a00010000",
        65536,
    ),
    (
        "int-18446744073709551615",
        "bafyreibnpsyje7iwfx3smzlnofkxqdyeqz3a4qzhwu33ktibq7sxeckrpq",
        "1bffffffffffffffff",
        2**64 - 1,
    ),
    (
        "int--9223372036854775808",
        "bafyreidh4mvwi7pnv62beigtnibakkxpsgjzua5g7kdvu2deltah6kigay",
        "3b7fffffffffffffff",
        -(2**63),
    ),
    (
        "int--11959030306112471732",
        "bafyreieir43khjzemsmgahaozab2vjvtdxavszixhhurvdqg2xkhrwinyi",
        "3ba5f702b3a5f702b3",
        -11959030306112471732,
    ),
    (
        "float-1.1",
        "bafyreifeekgttrbqlvjqmvey2r7damal3kiqn5a6r7a2pijrx4jgdv5odi",
        "fb3ff199999999999a",
        1.1,
    ),
    (
        "float-0.5",
        "bafyreifwqkffcpzsyfigri7xm2kaf6bz7si5stsnf46jep5w5we7ngmgma",
        "fb3fe0000000000000",
        0.5,
    ),
    (
        "float--1e-323",
        "bafyreibg2jfpbjanaowwfpoamj2tjpo2ifhy5fbkln55b5mlhfiy747egq",
        "fb8000000000000002",
        -1e-323,
    ),
    ("string-a", "bafyreiewdnw5h3pdzohmxkwl22g6aqgnpdvs5vmiseymz22mjeti5jgvay", "6161", "a"),
    (
        "string-Hello world!",
        "bafyreigmgu7icw3p3lf3prtti7x3o7vsc6e5peltjinsa7zni2axvlz5cm",
        "6c48656c6c6f20776f726c6421",
        "Hello world!",
    ),
    ("string-水", "bafyreib4565nbj4j6mklcrwjqgdv3uw4i6fr5dqb4dpqcqtsgrzeyg7hmm", "63e6b0b4", "水"),
    (
        "string-𐅑",
        "bafyreihgpl6u5kyypvntwaijdv7wxeiuugo6ruujt652eigmp27zarclam",
        "64f0908591",
        "𐅑",
    ),
    ("bytes-a1", "bafyreidfn5bivgcww7slkgp7f5iiukoggxr542m4pzl3zn3oia7ozt7ffe", "41a1", b"\xa1"),
    (
        "map-1_pair",
        "bafyreihltcnuuyqp2jm24aqydpnlj7b6w3ogwrplomrjtg5rifv44mmjey",
        "a1616101",
        {"a": 1},
    ),
    (
        "array-3,4,5,6",
        "bafyreid7y3kwce6omkwi4ziyisf5v2niknzjwab2ofigddwm3bq4xlnovy",
        "8403040506",
        [3, 4, 5, 6],
    ),
    (
        "float-array_of_specials",
        "bafyreibqkv642umtthvkk4siz2x27eqwugyitsjsgbc65ffmtajiag4b64",
        "8501f5f4f620",
        [1, True, False, None, -1],
    ),
    (
        "map-keysort",  # length-first key order, not Python's sorted()
        "bafyreifzcy56s5jog3scrc7c3rlaohrwu3recxgf5c7fddfjlnlhh6p6p4",
        "a9616601626565026364646403646363636304656262626262056661616161616106666161616161620766616161616163086661616161626209",
        {
            "f": 1,
            "ee": 2,
            "ddd": 3,
            "cccc": 4,
            "bbbbb": 5,
            "aaaaaa": 6,
            "aaaaab": 7,
            "aaaaac": 8,
            "aaaabb": 9,
        },
    ),
    (
        "map-nested",
        "bafyreib7zq4mhl7fwtmftjn7d7mmlwf6gi32vimlsjkn25w2e5xlhz2deu",
        "a1666f626a656374a16477697468a26134666e6573746564676f626a65637473a161216121",
        {"object": {"with": {"4": "nested", "objects": {"!": "!"}}}},
    ),
    (
        "array-5-nested",
        "bafyreihmxfmn5wcpzpiqa6zfefgabxmd2jzr2bd4y2v7c2ss4plkgkabgq",
        "8265617272617982626f66820582666e657374656482666172726179736121",
        ["array", ["of", [5, ["nested", ["arrays", "!"]]]]],
    ),
    (
        "array-mixed",
        "bafyreidufmzzejc3p7gmh6ivp4fjvca5jfazk57nu6vdkvki4c4vpja724",
        "8c1b0016db6db6db6db71a000100001901f40200202238ff3aa5f702b33b0016db6db6db6db74261316fc48c6175657320c39f76c49b746521",
        [
            6433713753386423,
            65536,
            500,
            2,
            0,
            -1,
            -3,
            -256,
            -2784428724,
            -6433713753386424,
            b"a1",
            "Čaues ßvěte!",
        ],
    ),
    (
        "ipns",
        "bafyreifxsv6jggzwuh72ta3mx7m74nwyqfyd5qfld6sqje6myesc7er7o4",
        "a56354544c006556616c756558412f697066732f6261667972656964336c6a70746a726d72797864656c3737747467626635726e76793469706b626278337535327433776c73666e663479667933696853657175656e6365056856616c6964697479581e323032332d30352d30325431333a34333a34312e3236323133363732375a6c56616c69646974795479706500",
        {
            "TTL": 0,
            "Value": b"/ipfs/bafyreid3ljptjrmryxdel77ttgbf5rnvy4ipkbbx3u52t3wlsfnf4yfy3i",
            "Sequence": 5,
            "Validity": b"2023-05-02T13:43:41.262136727Z",
            "ValidityType": 0,
        },
    ),
    (
        "cid-bafkreiebzrnroamgos2adnbpgw5apo3z4iishhbdx77gldnbk57d4zdio4",
        "bafyreic3yrxqeqgoi24fo3h43nfkfs4cntcx243g3lzv3n2hnmcm5ksnzu",
        "d82a5825000155122081cc5b17018674b401b42f35ba07bb79e211239c23bffe658da1577e3e646877",
        link("bafkreiebzrnroamgos2adnbpgw5apo3z4iishhbdx77gldnbk57d4zdio4"),
    ),
    (
        "cid-bafyreidj5idub6mapiupjwjsyyxhyhedxycv4vihfsicm2vt46o7morwlm",
        "bafyreihfnilmqbnwzcmqrspmmyik5qdocjdrf3rnkuxb2aanrh2qycf6wy",
        "d82a5825000171122069ea0740f9807a28f4d932c62e7c1c83be055e55072c90266ab3e79df63a365b",
        link("bafyreidj5idub6mapiupjwjsyyxhyhedxycv4vihfsicm2vt46o7morwlm"),
    ),
]

# Raw blocks (codec 0x55): CIDs printed by Kubo for these bytes.
RAW_VECTORS: list[tuple[bytes, str]] = [
    (b"", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
    (b"hello world", "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"),
    (b"hello world\n", "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"),
]

_IDS = [v[0] for v in DAG_CBOR_VECTORS]


@pytest.mark.parametrize(("name", "cid", "hex_bytes", "value"), DAG_CBOR_VECTORS, ids=_IDS)
def test_dag_cbor_vector_cid_bytes_and_value(
    name: str, cid: str, hex_bytes: str, value: Any
) -> None:
    data = bytes.fromhex(hex_bytes)
    assert cid_for(data, DAG_CBOR).encode() == cid
    assert encode_dag(value) == data
    block = dag_block(value)
    assert block.cid.encode() == cid
    assert block.data == data
    assert block.codec == DAG_CBOR
    decoded = decode_dag(data)
    assert decoded == value
    assert type(decoded) is type(value)
    assert decode_block(parse_cid(cid), data) == value


def test_the_empty_map_is_the_well_known_cid() -> None:
    assert (
        dag_block({}).cid.encode() == "bafyreigbtj4x7ip5legnfznufuopl4sg4knzc2cof6duas4b3q2fy6swua"
    )


def test_map_keys_are_encoded_in_dag_cbor_order_whatever_the_insertion_order() -> None:
    _, _, hex_bytes, value = next(v for v in DAG_CBOR_VECTORS if v[0] == "map-keysort")
    for ordering in (sorted(value), sorted(value, reverse=True), list(value)[::-1]):
        assert encode_dag({k: value[k] for k in ordering}).hex() == hex_bytes
    assert list(decode_dag(bytes.fromhex(hex_bytes))) == list(value)


@pytest.mark.parametrize(("data", "cid"), RAW_VECTORS, ids=["empty", "hello", "hello-nl"])
def test_raw_vector(data: bytes, cid: str) -> None:
    block = raw_block(data)
    assert block.cid.encode() == cid
    assert block.codec == RAW
    assert cid_for(data, RAW) == parse_cid(cid)
    assert decode_block(parse_cid(cid), data) == data


def test_cid_layout_is_cidv1_codec_sha256() -> None:
    cid = raw_block(b"hello world").cid
    assert cid.cid_bytes.hex() == (
        "01551220b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    )
    assert cid_codec(cid) == RAW
    assert cid_codec(dag_block({}).cid) == DAG_CBOR


def test_cid_for_refuses_an_unknown_codec() -> None:
    with pytest.raises(CidError, match="unsupported codec 0x70"):
        cid_for(b"", 0x70)


# -- parse_cid ---------------------------------------------------------------------------


@pytest.mark.parametrize("cid", [v[1] for v in DAG_CBOR_VECTORS] + [v[1] for v in RAW_VECTORS])
def test_parse_cid_round_trips_what_encode_prints(cid: str) -> None:
    parsed = parse_cid(cid)
    assert parsed.encode() == cid
    assert str(parse_cid(parsed.encode()).encode()) == cid


EMPTY_MAP = "bafyreigbtj4x7ip5legnfznufuopl4sg4knzc2cof6duas4b3q2fy6swua"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a base32 CIDv1"),
        ("b", "expected a base32 CIDv1"),
        ("QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n", "expected a base32 CIDv1"),  # v0
        ("zdpuAtX7ZibcWdSKQwiDCkPjWwRvtcKCPku9H7LhgA4qJW4Wk", "expected a base32 CIDv1"),
        (" " + EMPTY_MAP, "expected a base32 CIDv1"),
        (EMPTY_MAP.upper(), "expected a base32 CIDv1"),  # "B…" is base32upper
        ("b" + EMPTY_MAP[1:].upper(), "not lowercase base32"),
        (EMPTY_MAP + "=", "not lowercase base32"),
        (EMPTY_MAP + "\n", "not lowercase base32"),
        (EMPTY_MAP[:-1] + "b", "non-canonical"),  # same bytes, nonzero trailing bits
        (EMPTY_MAP[:-1], "invalid base32"),
        (EMPTY_MAP + "a", "invalid base32"),
        (EMPTY_MAP[:-8], "only CIDv1 with sha2-256"),  # truncated digest
        (EMPTY_MAP + "aaaaaaaa", "only CIDv1 with sha2-256"),  # digest too long
        ("bafkqabiaaebagba", "unsupported multihash .*hash 0x00"),  # identity multihash
        # dag-pb (0x70), the codec of UnixFS directories and files.
        ("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", "unsupported codec 0x70"),
        # dag-json (0x0129): a two-byte varint codec.
        ("baguqeeradlrdqvxqd3cbbbtsmn7n4mpadvtqvcvj2ggkcf6mx76jzsrxzboa", "unsupported codec"),
        ("bafyreia", "0-byte digest where the header says 32"),
        ("bafyrei", "invalid base32"),
    ],
)
def test_parse_cid_rejects_junk(text: str, message: str) -> None:
    with pytest.raises(CidError, match=message):
        parse_cid(text)


def test_parse_cid_rejects_non_strings() -> None:
    with pytest.raises(CidError):
        parse_cid(EMPTY_MAP.encode())  # type: ignore[arg-type]
