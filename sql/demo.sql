-- pgrealtime demo schema, loaded by `pgrealtime dev`. Idempotent: it drops
-- and recreates the demo tables.

DROP TABLE IF EXISTS comments, posts, messages, page_views CASCADE;

CREATE TABLE posts (
    id             bigserial PRIMARY KEY,
    title          text NOT NULL,
    body           text NOT NULL DEFAULT '',
    tags           text[] NOT NULL DEFAULT '{}',
    meta           jsonb NOT NULL DEFAULT '{}',
    internal_notes text,
    published      boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE comments (
    id         bigserial PRIMARY KEY,
    post_id    bigint NOT NULL REFERENCES posts(id) ON DELETE CASCADE,
    author     text NOT NULL,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Private messages: the demo rules let a user read only rows whose user_id
-- is their JWT subject.
CREATE TABLE messages (
    id         bigserial PRIMARY KEY,
    user_id    text NOT NULL,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- No primary key: pgrealtime streams only its inserts (and truncates), and
-- UPDATE/DELETE keep working.
CREATE TABLE page_views (
    path      text NOT NULL,
    viewer    text,
    viewed_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO posts (title, body, tags, meta, internal_notes, published) VALUES
    ('Hello, pgrealtime', 'Every committed change is streamed.', '{intro,news}', '{"likes": 3}', 'draft reviewed by ann', true),
    ('Second post', 'Subscribe to posts.2 to follow this one.', '{howto}', '{"likes": 0}', NULL, true);

INSERT INTO comments (post_id, author, body) VALUES
    (1, 'ann', 'First!'),
    (1, 'bob', 'Nice.');

INSERT INTO messages (user_id, body) VALUES
    ('ann', 'Hi Ann, only you can read this.'),
    ('bob', 'Hi Bob, only you can read this.');

INSERT INTO page_views (path, viewer) VALUES ('/', 'ann'), ('/posts/1', NULL);
