"""Cutover: fence, drain, back up, overwrite, replay, unmask, verify, unfence — resumable phases."""
