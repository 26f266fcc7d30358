"""Seeded generators that write small files byte-for-byte in each public raw layout.

Each writer returns the frame the matching reader must give back (schema names, int64 epoch
seconds), computed from the generated values, not by parsing the file.
"""
from __future__ import annotations

import gzip
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

YOOCHOOSE_START = np.datetime64("2014-04-01T00:00:00", "ms")
REES46_START = np.datetime64("2019-10-01T00:00:00", "s")


def _iso_ms(ms: np.ndarray) -> pd.Series:
    """epoch ms -> '2014-04-07T10:51:09.277Z' (the YOOCHOOSE form: always 3 decimals and Z)."""
    return pd.Series(np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms")) + "Z"


def write_yoochoose(path: Path, n: int = 1000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    session = np.sort(rng.integers(1, max(n // 4, 2), n))
    ms = YOOCHOOSE_START.astype(np.int64) + rng.integers(0, 183 * 86_400_000, n)
    item = rng.integers(214_500_000, 214_900_000, n)
    kinds = np.array(["0", "S", "3", "12", "2058723040", "2090007413"])
    category = kinds[rng.integers(0, len(kinds), n)]
    lines = (pd.Series(session).astype(str) + "," + _iso_ms(ms) + "," + pd.Series(item).astype(str)
             + "," + category)
    Path(path).write_text("\n".join(lines) + "\n")
    return pd.DataFrame({"session_id": session, "item_id": item, "timestamp": ms // 1000,
                         "category": category})


def write_diginetica(path: Path, n: int = 1000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    session = np.sort(rng.integers(1, max(n // 5, 2), n))
    user = pd.array(rng.integers(1, 50_000, n), dtype="Int64")
    user[rng.random(n) < 0.7] = pd.NA  # most DIGINETICA sessions are anonymous: 'NA'
    item = rng.integers(1, 184_048, n)
    timeframe = rng.integers(0, 3_000_000, n)
    days = rng.integers(0, 152, n)
    date = np.datetime64("2016-01-01") + days
    header = "sessionId;userId;itemId;timeframe;eventdate"
    lines = (pd.Series(session).astype(str) + ";" + pd.Series(user).astype(str).replace("<NA>", "NA")
             + ";" + pd.Series(item).astype(str) + ";" + pd.Series(timeframe).astype(str) + ";"
             + pd.Series(np.datetime_as_string(date, unit="D")))
    Path(path).write_text(header + "\n" + "\n".join(lines) + "\n")
    seconds = date.astype("datetime64[s]").astype(np.int64) + timeframe // 1000
    return pd.DataFrame({"session_id": session, "item_id": item, "timestamp": seconds,
                         "timeframe": timeframe, "user_id": user})


def write_rees46(path: Path, n: int = 1000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    seconds = REES46_START.astype(np.int64) + np.sort(rng.integers(0, 31 * 86_400, n))
    sessions = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(max(n // 6, 1))]
    session = np.array(sessions)[rng.integers(0, len(sessions), n)]
    event_type = np.array(["view", "view", "view", "cart", "purchase", "remove_from_cart"])[
        rng.integers(0, 6, n)]
    product = rng.integers(1_000_000, 60_000_000, n)
    category_id = rng.integers(2_053_013_552_226_107_603, 2_175_419_595_093_967_522, n)
    codes = np.array(["", "electronics.smartphone", "appliances.kitchen.refrigerators"])
    category_code = codes[rng.integers(0, 3, n)]
    brand = np.array(["", "shiseido", "samsung", "apple"])[rng.integers(0, 4, n)]
    price = np.round(rng.uniform(0.5, 2500, n), 2)
    user = rng.integers(10_000_000, 600_000_000, n)
    time = pd.Series(np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s")).str.replace(
        "T", " ") + " UTC"
    frame = pd.DataFrame({"event_time": time, "event_type": event_type, "product_id": product,
                          "category_id": category_id, "category_code": category_code,
                          "brand": brand, "price": price, "user_id": user,
                          "user_session": session})
    frame.to_csv(path, index=False, lineterminator="\n", float_format="%.2f")
    return pd.DataFrame({
        "session_id": np.array([uuid.UUID(s).int >> 64 for s in session], dtype=np.uint64)
        .view(np.int64),
        "item_id": product, "timestamp": seconds, "user_id": user, "event_type": event_type,
        "category_id": category_id, "category_code": category_code, "brand": brand,
        "price": price, "user_session": session,
    })


def write_movielens(path: Path, ratings: pd.DataFrame, layout: str) -> pd.DataFrame:
    """ratings (user_id, item_id, rating, timestamp) in 'u.data', 'ratings.dat' or 'ratings.csv';
    gzipped when `path` ends with .gz."""
    cols = [ratings[c].astype(str) for c in ("user_id", "item_id", "rating", "timestamp")]
    if layout == "ratings.csv":  # 20M/25M write ratings like 3.5 and 4.0
        cols[2] = ratings["rating"].map("{:.1f}".format)
    sep, header = {"u.data": ("\t", ""), "ratings.dat": ("::", ""),
                   "ratings.csv": (",", "userId,movieId,rating,timestamp\n")}[layout]
    lines = cols[0] + sep + cols[1] + sep + cols[2] + sep + cols[3]
    text = header + "\n".join(lines) + "\n"
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt") as out:
            out.write(text)
    else:
        Path(path).write_text(text)
    return ratings[["user_id", "item_id", "timestamp", "rating"]].reset_index(drop=True)
