package main

import (
	"context"
	"fmt"
	"io"
	"time"
)

// runToken mints an HS256 token signed with --jwt-secret: for trying the
// server (inspector, curl) and for app servers that call /api/broadcast.
func runToken(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(cmdToken, "token", args, getenv, stdout)
	if err != nil {
		return err
	}
	if cfg.JWTSecret == "" {
		return configErr("--jwt-secret", "required: the token is signed with it (set --jwt-secret or PGREALTIME_JWT_SECRET)")
	}
	tok, err := signToken(cfg.JWTSecret, mintClaims(cfg, cfg.Subject, cfg.Role, time.Now().Add(cfg.TTL)))
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

// mintClaims are the claims of a token minted by `token` or `dev`: with the
// audience and issuer the server requires, so that it is accepted.
func mintClaims(cfg *Config, sub, role string, exp time.Time) map[string]any {
	claims := map[string]any{"sub": sub, "exp": exp.Unix()}
	if role != "" {
		claims["role"] = role
	}
	if len(cfg.JWTAudience) > 0 {
		claims["aud"] = cfg.JWTAudience[0]
	}
	if cfg.JWTIssuer != "" {
		claims["iss"] = cfg.JWTIssuer
	}
	return claims
}
