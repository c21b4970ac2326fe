-- Leases with fencing tokens (ADR 0009). A row is never deleted, so a lease's token only grows:
-- taking a free or expired lease sets token = token + 1; renewing moves expires_at; releasing
-- sets expires_at to now. Times are the server's clock (now()), never a client's.
CREATE TABLE netfold_leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    token bigint NOT NULL CHECK (token >= 1),
    expires_at timestamptz NOT NULL
);
