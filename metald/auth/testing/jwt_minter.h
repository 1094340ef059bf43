#pragma once
// Test-only token minting for metald/auth and for integration tests that need real JWTs.
// Production targets must not link this (tools/check_includes.py enforces it).
//
// Thread-safety: free functions without shared state; safe from any thread. Every failure
// (bad PEM, OpenSSL error) aborts: these helpers are for tests, where a broken fixture is a bug.

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace metald::auth::testing_util {

struct KeyPair {
  std::string private_pem;  // PKCS#8 "PRIVATE KEY".
  std::string public_pem;   // SubjectPublicKeyInfo "PUBLIC KEY" (what JwtKey::material takes).
};

// Fresh keys from OpenSSL's default random source.
KeyPair GenerateRsaKeyPair(int bits = 2048);
KeyPair GenerateEcP256KeyPair();

// Signs `alg` over base64url(header) "." base64url(claims) and returns the compact JWS.
// The header is {"alg": alg, "typ": "JWT"} merged with `header_extra` (whose members win, so a
// test may set "kid", override "alg", or add "crit").
// `key`: the HMAC secret for "HS256"; a private-key PEM for "RS256" / "ES256". For any other
// `alg` (e.g. "none") the signature is empty and `key` is ignored.
std::string MintJwt(std::string_view alg, std::string_view key, const nlohmann::json& claims,
                    const nlohmann::json& header_extra = nlohmann::json::object());

// Like MintJwt but with the header and payload given as raw text (need not be JSON), signed with
// `sign_alg` ("HS256", "RS256", "ES256", or anything else for an empty signature).
std::string MintJwtRaw(std::string_view sign_alg, std::string_view key, std::string_view header,
                       std::string_view payload);

// The raw JOSE signature of `input` (HS256: 32-byte MAC, RS256: modulus-size, ES256: r || s).
std::string Sign(std::string_view alg, std::string_view key, std::string_view input);

// A JWK for `public_pem` (RSA or EC P-256) with "kid", "use":"sig" and, when `alg` is not empty,
// "alg".
nlohmann::json PublicJwk(std::string_view public_pem, std::string_view kid, std::string_view alg);
// An "oct" JWK for an HMAC secret.
nlohmann::json SecretJwk(std::string_view secret, std::string_view kid, std::string_view alg);

// base64url without padding.
std::string Base64Url(std::string_view bytes);

}  // namespace metald::auth::testing_util
