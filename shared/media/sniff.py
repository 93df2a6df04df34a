"""Recognise audio/video containers from their first bytes, before anything is stored.

Extensions and declared content types lie; magic numbers rarely do. Anything not recognised here
(text, playlists, archives, images) is refused with 415 `not_media`.
"""

from __future__ import annotations

# Enough for every signature below, including the third MPEG-TS sync byte.
SNIFF_BYTES = 4096

_ISO_BMFF_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")


def _is_mpeg_ts(head: bytes, packet: int, offset: int) -> bool:
    syncs = [offset + i * packet for i in range(3)]
    return len(head) > syncs[-1] and all(head[i] == 0x47 for i in syncs)


def _is_mpeg_audio(head: bytes) -> bool:
    # Frame sync (11 bits set), a valid version/layer and not the reserved bitrate index.
    if len(head) < 4 or head[0] != 0xFF or (head[1] & 0xE0) != 0xE0:
        return False
    layer = (head[1] >> 1) & 0x3
    bitrate_index = head[2] >> 4
    return layer != 0 and bitrate_index != 0xF


def sniff_container(head: bytes) -> str | None:
    """The container family the bytes start with, or None when they are not media."""
    if len(head) >= 8 and head[4:8] in _ISO_BMFF_BOXES:
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"RIFF") and head[8:12] in (b"AVI ", b"WAVE", b"AVIX"):
        return "avi" if head[8:11] == b"AVI" else "wav"
    if head.startswith((b"FORM",)) and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head.startswith(b"FLV\x01"):
        return "flv"
    if head.startswith(b"\x00\x00\x01\xba") or head.startswith(b"\x00\x00\x01\xb3"):
        return "mpeg"
    if _is_mpeg_ts(head, 188, 0) or _is_mpeg_ts(head, 192, 4):
        return "mpegts"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "asf"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"ID3") or _is_mpeg_audio(head):
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xF6) == 0xF0:
        return "aac"
    if head.startswith(b"#!AMR"):
        return "amr"
    if head.startswith(b".RMF"):
        return "rm"
    if head.startswith(b"caff"):
        return "caf"
    return None
