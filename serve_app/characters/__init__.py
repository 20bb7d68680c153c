"""Characters that keep their face: identity verdicts, the face and image scorer, IP-Adapter
conditioning and the consistency gate (``verdicts`` is the contract the rest reads)."""
