"""Realtime speech API: pure dialect codecs and the WebSocket connection around them."""
