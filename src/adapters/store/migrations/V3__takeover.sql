-- A mailbox postdesk is taking over (not yet read to its end once): its old
-- mail is history, also after a restart in the middle.
ALTER TABLE positions ADD COLUMN taking_over boolean NOT NULL DEFAULT false;
