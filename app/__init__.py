"""Tolk: live speech-to-speech translation on Ray Serve."""
