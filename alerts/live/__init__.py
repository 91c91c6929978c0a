"""The live alert board: a page, a JSON snapshot and a WebSocket fed by instance changes.

- `publish`: turns AlertInstance / Silence changes into board messages for the tenant's
  channel-layer group, after the transaction commits.
- `consumers`: the WebSocket end (session auth, one tenant group per socket).
- `views`, `urls`: the page, its snapshot endpoint and its login page.
- `tenancy`: the tenant resolution shared by the page, the snapshot and the socket.
"""
