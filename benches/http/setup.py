#!/usr/bin/env python3
"""Prepares a running gateway for scripts/bench-http (Python standard library only).

- Creates N IntentLayer sessions (one user each: a user keeps at most `max_sessions_per_user` live sessions), gives
  each I interactions through `POST /api/v1/sessions/chat` (a question and an answer stored each, so that the
  history read has a full page to return), and writes their wire ids, one per line, to
  OUT_DIR/intentlayer_sessions.txt.
- Mints HS256 JWTs for M chatbot users (signed with the secret the gateway was started with), and gives each user
  a real conversation history through the real chat socket (`WS /ws/chat/{session}`), K messages each (every
  message stores the user's message and the assistant's answer). Writes the tokens to OUT_DIR/chatbot_tokens.txt.

Nothing is written to the database behind the gateway's back: every row comes from the public API.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

CHAT_MESSAGES = [
    "Je voudrais un formulaire de contact",
    "Show me a dashboard with statistics",
    "I need a navigation menu",
    "Create a registration form please",
]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_jwt(secret: str, sub: str, ttl_s: int = 6 * 3600) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    now = int(time.time())
    claims = b64url(json.dumps({"sub": sub, "iat": now, "exp": now + ttl_s}, separators=(",", ":")).encode())
    signing_input = f"{header}.{claims}".encode()
    signature = b64url(hmac.new(secret.encode(), signing_input, hashlib.sha256).digest())
    return f"{header}.{claims}.{signature}"


def post_json(base: str, path: str, body, headers=None):
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(base + path, data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


class WebSocket:
    """The smallest RFC 6455 client that can hold a chat: text frames out (masked), frames in."""

    def __init__(self, host: str, port: int, path: str):
        self.sock = socket.create_connection((host, port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError("connection closed during the WebSocket handshake")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"WebSocket upgrade refused: {head.decode(errors='replace')}")

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("WebSocket closed by the server")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send_text(self, text: str):
        payload = text.encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        elif len(payload) < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def recv_json(self):
        """The next text message as JSON (pings are answered, other control frames skipped)."""
        while True:
            b0, b1 = self._read(2)
            opcode, length = b0 & 0x0F, b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._read(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._read(8))
            payload = self._read(length)
            if opcode == 0x1:
                return json.loads(payload)
            if opcode == 0x8:
                raise RuntimeError(f"WebSocket closed by the server: {payload[:2].hex()} {payload[2:]!r}")
            if opcode == 0x9:
                mask = os.urandom(4)
                self.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def close(self):
        mask = os.urandom(4)
        payload = struct.pack("!H", 1000)
        try:
            self.sock.sendall(bytes([0x88, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        finally:
            self.sock.close()


def create_intentlayer_session(base: str, i: int, interactions: int) -> str:
    body = post_json(base, "/api/v1/sessions/create", {"user_id": f"bench-user-{i}", "user_data": {"name": f"Bench {i}"}})
    session = body["session_info"]["session_id"]
    for n in range(interactions):
        post_json(base, "/api/v1/sessions/chat", {"session_id": session, "message": CHAT_MESSAGES[(i + n) % len(CHAT_MESSAGES)]})
    return session


def seed_chatbot_user(base: str, host: str, port: int, secret: str, chatbot: str, i: int, messages: int) -> str:
    token = mint_jwt(secret, f"bench-chat-{i}")
    opened = post_json(base, f"/chatbot/{chatbot}/session", None, {"Authorization": f"Bearer {token}"})
    if messages > 0:
        ws = WebSocket(host, port, f"/ws/chat/{opened['session_id']}?token={token}")
        try:
            first = ws.recv_json()
            if first.get("type") != "session_info":
                raise RuntimeError(f"expected session_info, got {first}")
            for n in range(messages):
                ws.send_text(json.dumps({"message": f"{CHAT_MESSAGES[n % len(CHAT_MESSAGES)]} ({n})", "message_type": "text"}))
                while True:
                    event = ws.recv_json()
                    if event.get("type") == "response_complete":
                        break
                    if event.get("type") == "error":
                        raise RuntimeError(f"chat error while seeding history: {event}")
        finally:
            ws.close()
    return token


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--addr", required=True, help="host:port of the gateway")
    parser.add_argument("--out", required=True, help="directory for the id and token lists")
    parser.add_argument("--sessions", type=int, default=256, help="IntentLayer sessions to create")
    parser.add_argument("--interactions", type=int, default=10, help="chat interactions per IntentLayer session")
    parser.add_argument("--chat-users", type=int, default=64, help="chatbot users to create")
    parser.add_argument("--history", type=int, default=5, help="chat messages per chatbot user (two stored each)")
    parser.add_argument("--chatbot", default="assistant")
    args = parser.parse_args()
    secret = os.environ.get("VOXGATE_JWT_SECRET")
    if not secret:
        print("setup.py: VOXGATE_JWT_SECRET must be set (the secret the gateway runs with)", file=sys.stderr)
        return 2
    host, port = args.addr.rsplit(":", 1)
    base = f"http://{args.addr}"
    with ThreadPoolExecutor(max_workers=8) as pool:
        sessions = list(pool.map(lambda i: create_intentlayer_session(base, i, args.interactions), range(args.sessions)))
        tokens = list(
            pool.map(
                lambda i: seed_chatbot_user(base, host, int(port), secret, args.chatbot, i, args.history),
                range(args.chat_users),
            )
        )
    with open(os.path.join(args.out, "intentlayer_sessions.txt"), "w") as f:
        f.write("\n".join(sessions) + "\n")
    with open(os.path.join(args.out, "chatbot_tokens.txt"), "w") as f:
        f.write("\n".join(tokens) + "\n")
    print(f"setup: {len(sessions)} IntentLayer sessions with {args.interactions} interactions each, {len(tokens)} chatbot users with {args.history} messages of history each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
