package auth_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/pgrealtime/pgrealtime/wsapi/auth"
)

func Example() {
	secret := []byte("a secret of at least 32 bytes!!!")
	v, err := auth.NewVerifier(auth.Config{HS256Secret: secret})
	if err != nil {
		panic(err)
	}
	tok, _ := auth.SignHS256(secret, map[string]any{"sub": "u1", "role": "user", "exp": time.Now().Add(time.Hour)})
	id, err := v.Verify(tok)
	fmt.Println(id.Subject, id.Role, err)

	old, _ := auth.SignHS256(secret, map[string]any{"sub": "u1", "exp": time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)})
	_, err = v.Verify(old)
	fmt.Println(errors.Is(err, auth.ErrTokenExpired), err)
	// Output:
	// u1 user <nil>
	// true token expired: token expired at 2020-01-01T00:00:00Z
}
