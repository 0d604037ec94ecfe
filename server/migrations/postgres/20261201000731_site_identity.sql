-- Signed identity for logged-in customers (twin of ../sqlite/20261201000731_site_identity.sql).
-- The identity secret is the one secret kept in clear: the server must compute HMAC-SHA256(secret, id) to check a
-- hash. It never leaves the server (not in logs, the frame's boot config or any answer) except once, on the CLI
-- that generates it.
alter table sites add column identity_secret text;
alter table sites add column identity_required boolean not null default false;

-- The customer's id on the host site, for identified contacts (their web_token_hash is derived from it).
alter table contacts add column external_id text;
alter table contacts add column email text;
create unique index contacts_external_id on contacts(site_id, external_id) where external_id is not null;
