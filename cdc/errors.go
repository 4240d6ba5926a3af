package cdc

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNotLogical is wrapped by the error Run returns when the server's
// wal_level is not logical.
var ErrNotLogical = errors.New("wal_level is not logical")

type walLevelError struct{ level string }

func (e *walLevelError) Error() string {
	return "wal_level is " + e.level + "; set wal_level = logical in postgresql.conf and restart Postgres"
}
func (e *walLevelError) Is(target error) bool { return target == ErrNotLogical }

// fatalError marks a setup failure that retrying cannot fix: Run returns
// it instead of reconnecting.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// IsFatal reports whether err is a setup failure that needs a change by
// the user (Run returned it instead of retrying).
func IsFatal(err error) bool {
	var f *fatalError
	return errors.As(err, &f)
}

// classifyConnectError turns connection errors a user can fix into fatal
// errors that say what to change.
func classifyConnectError(what string, err error, replication bool) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return fmt.Errorf("%s: %w", what, err)
	}
	switch pgErr.Code {
	case "28P01", "28000":
		return &fatalError{fmt.Errorf("%s: %w: check the user and password in the database URL and pg_hba.conf", what, err)}
	case "3D000":
		return &fatalError{fmt.Errorf("%s: %w: create the database or fix its name in the database URL", what, err)}
	case "42501":
		if replication {
			return &fatalError{fmt.Errorf("%s: %w: the role needs the REPLICATION attribute: ALTER ROLE <user> REPLICATION (or use a superuser)", what, err)}
		}
		return &fatalError{fmt.Errorf("%s: %w: GRANT CONNECT ON DATABASE <db> TO <user>", what, err)}
	}
	return fmt.Errorf("%s: %w", what, err)
}
