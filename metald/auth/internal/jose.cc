#include "metald/auth/internal/jose.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <array>
#include <cstring>
#include <nlohmann/json.hpp>
#include <utility>

namespace metald::auth::internal {
namespace {

using base::InvalidArgumentError;
using base::Result;
using base::Status;
using Json = nlohmann::json;

constexpr size_t kMinHmacSecretBytes = 32;  // RFC 7518 §3.2: at least the hash output size.
constexpr int kMinRsaBits = 2048;
constexpr int kMaxRsaBits = 8192;  // Bounds verification cost per token.
constexpr size_t kEs256SignatureBytes = 64;
constexpr size_t kP256CoordinateBytes = 32;

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct PkeyCtxDeleter {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
struct BioDeleter {
  void operator()(BIO* p) const { BIO_free(p); }
};
struct BnDeleter {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
struct ParamBldDeleter {
  void operator()(OSSL_PARAM_BLD* p) const { OSSL_PARAM_BLD_free(p); }
};
struct ParamDeleter {
  void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); }
};
struct EcdsaSigDeleter {
  void operator()(ECDSA_SIG* p) const { ECDSA_SIG_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxDeleter>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using BnPtr = std::unique_ptr<BIGNUM, BnDeleter>;
using ParamBldPtr = std::unique_ptr<OSSL_PARAM_BLD, ParamBldDeleter>;
using ParamPtr = std::unique_ptr<OSSL_PARAM, ParamDeleter>;
using EcdsaSigPtr = std::unique_ptr<ECDSA_SIG, EcdsaSigDeleter>;

// OpenSSL keeps a per-thread error queue; failures here are expected outcomes (bad signatures),
// so drop what they left behind instead of letting it leak into unrelated callers' diagnostics.
struct ErrorQueueGuard {
  ~ErrorQueueGuard() { ERR_clear_error(); }
};

int Base64UrlValue(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

const unsigned char* Bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

// Checks that `pkey` has the type and size `alg` needs. `what` names the key in messages.
Status CheckPublicKey(EVP_PKEY* pkey, JwtAlgorithm alg, const std::string& what) {
  ErrorQueueGuard guard;
  switch (alg) {
    case JwtAlgorithm::kHS256:
      return InvalidArgumentError(what + ": HS256 needs a shared secret, not a public key");
    case JwtAlgorithm::kRS256: {
      if (EVP_PKEY_is_a(pkey, "RSA") != 1) {
        return InvalidArgumentError(what + ": RS256 needs an RSA public key");
      }
      const int bits = EVP_PKEY_get_bits(pkey);
      if (bits < kMinRsaBits || bits > kMaxRsaBits) {
        return InvalidArgumentError(what + ": RSA key size " + std::to_string(bits) +
                                    " is outside [2048, 8192] bits");
      }
      BIGNUM* e_raw = nullptr;
      if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e_raw) != 1) {
        return InvalidArgumentError(what + ": RSA key has no public exponent");
      }
      BnPtr e(e_raw);
      // e = 1 would make every padded message its own signature.
      if (BN_is_odd(e.get()) != 1 || BN_num_bits(e.get()) < 2) {
        return InvalidArgumentError(what + ": RSA public exponent is not an odd number >= 3");
      }
      break;
    }
    case JwtAlgorithm::kES256: {
      if (EVP_PKEY_is_a(pkey, "EC") != 1) {
        return InvalidArgumentError(what + ": ES256 needs an EC public key");
      }
      std::array<char, 64> group{};
      size_t len = 0;
      if (EVP_PKEY_get_group_name(pkey, group.data(), group.size(), &len) != 1 ||
          std::string_view(group.data(), len) != "prime256v1") {
        return InvalidArgumentError(what + ": ES256 needs a key on curve P-256");
      }
      break;
    }
  }
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey, nullptr));
  if (!ctx || EVP_PKEY_public_check(ctx.get()) != 1) {
    return InvalidArgumentError(what + ": public key fails validation");
  }
  return base::OkStatus();
}

Status CheckHmacSecret(std::string_view secret, const std::string& what) {
  if (secret.size() < kMinHmacSecretBytes) {
    return InvalidArgumentError(what + ": HS256 secret is shorter than 32 bytes");
  }
  // The classic algorithm-swap attack signs HS256 with the server's RSA public key as the secret;
  // refusing PEM text here means a public key can never end up as an HMAC secret.
  if (secret.find("-----BEGIN") != std::string_view::npos) {
    return InvalidArgumentError(what + ": HS256 secret looks like a PEM key");
  }
  return base::OkStatus();
}

// Reads a base64url-encoded big-endian unsigned integer member of a JWK.
Result<std::string> JwkBytes(const Json& jwk, const char* member, const std::string& what) {
  auto it = jwk.find(member);
  if (it == jwk.end() || !it->is_string()) {
    return InvalidArgumentError(what + ": member " + member + " is missing or not a string");
  }
  std::optional<std::string> bytes = Base64UrlDecode(it->get_ref<const std::string&>());
  if (!bytes || bytes->empty()) {
    return InvalidArgumentError(what + ": member " + member + " is not valid base64url");
  }
  return *std::move(bytes);
}

Result<PkeyPtr> PkeyFromParams(const char* type, OSSL_PARAM_BLD* bld, const std::string& what) {
  ErrorQueueGuard guard;
  ParamPtr params(OSSL_PARAM_BLD_to_param(bld));
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1 || !raw) {
    return InvalidArgumentError(what + ": key parameters are not a valid public key");
  }
  return PkeyPtr(raw);
}

Result<PkeyPtr> RsaFromJwk(const Json& jwk, const std::string& what) {
  ASSIGN_OR_RETURN(std::string n_bytes, JwkBytes(jwk, "n", what));
  ASSIGN_OR_RETURN(std::string e_bytes, JwkBytes(jwk, "e", what));
  BnPtr n(BN_bin2bn(Bytes(n_bytes), static_cast<int>(n_bytes.size()), nullptr));
  BnPtr e(BN_bin2bn(Bytes(e_bytes), static_cast<int>(e_bytes.size()), nullptr));
  ParamBldPtr bld(OSSL_PARAM_BLD_new());
  if (!n || !e || !bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get()) != 1) {
    ERR_clear_error();
    return base::InternalError(what + ": cannot build RSA key parameters");
  }
  return PkeyFromParams("RSA", bld.get(), what);
}

Result<PkeyPtr> P256FromJwk(const Json& jwk, const std::string& what) {
  ASSIGN_OR_RETURN(std::string x, JwkBytes(jwk, "x", what));
  ASSIGN_OR_RETURN(std::string y, JwkBytes(jwk, "y", what));
  if (x.size() != kP256CoordinateBytes || y.size() != kP256CoordinateBytes) {
    return InvalidArgumentError(what + ": P-256 coordinates must be 32 bytes each");
  }
  std::string point = "\x04" + x + y;  // SEC1 uncompressed point.
  ParamBldPtr bld(OSSL_PARAM_BLD_new());
  if (!bld ||
      OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) !=
          1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                       point.size()) != 1) {
    ERR_clear_error();
    return base::InternalError(what + ": cannot build EC key parameters");
  }
  return PkeyFromParams("EC", bld.get(), what);
}

bool VerifyDigest(EVP_PKEY* pkey, bool rsa_pkcs1, std::string_view input, const unsigned char* sig,
                  size_t sig_len) {
  MdCtxPtr md(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;  // Owned by md.
  if (!md || EVP_DigestVerifyInit(md.get(), &pctx, EVP_sha256(), nullptr, pkey) != 1) {
    return false;
  }
  if (rsa_pkcs1 && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1) return false;
  return EVP_DigestVerify(md.get(), sig, sig_len, Bytes(input), input.size()) == 1;
}

}  // namespace

std::optional<std::string> Base64UrlDecode(std::string_view in) {
  if (in.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t buffer = 0;
  int bits = 0;
  for (char c : in) {
    const int v = Base64UrlValue(static_cast<unsigned char>(c));
    if (v < 0) return std::nullopt;
    buffer = (buffer << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xFF));
    }
    buffer &= (1u << bits) - 1;
  }
  if (buffer != 0) return std::nullopt;  // Non-zero padding bits: not the canonical encoding.
  return out;
}

std::string Base64UrlEncode(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((in.size() * 4 + 2) / 3);
  uint32_t buffer = 0;
  int bits = 0;
  for (char c : in) {
    buffer = (buffer << 8) | static_cast<unsigned char>(c);
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kAlphabet[(buffer >> bits) & 0x3F]);
    }
    buffer &= (1u << bits) - 1;
  }
  if (bits > 0) out.push_back(kAlphabet[(buffer << (6 - bits)) & 0x3F]);
  return out;
}

struct VerifyKey::Material {
  std::string secret;  // HS256 only.
  PkeyPtr pkey;        // RS256 / ES256 only.
};

VerifyKey::VerifyKey(std::string kid, JwtAlgorithm algorithm, std::unique_ptr<Material> material)
    : kid_(std::move(kid)), algorithm_(algorithm), material_(std::move(material)) {}

VerifyKey::~VerifyKey() {
  if (material_ && !material_->secret.empty()) {
    OPENSSL_cleanse(material_->secret.data(), material_->secret.size());
  }
}

Result<std::unique_ptr<VerifyKey>> VerifyKey::FromConfig(const JwtKey& key) {
  const std::string what =
      "Key '" + key.kid + "' (" + std::string(JwtAlgorithmName(key.algorithm)) + ")";
  auto material = std::make_unique<Material>();
  if (key.algorithm == JwtAlgorithm::kHS256) {
    RETURN_IF_ERROR(CheckHmacSecret(key.material, what));
    material->secret = key.material;
  } else {
    ErrorQueueGuard guard;
    BioPtr bio(BIO_new_mem_buf(key.material.data(), static_cast<int>(key.material.size())));
    if (!bio) return base::InternalError(what + ": cannot allocate a buffer");
    material->pkey.reset(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
    if (!material->pkey) {
      return InvalidArgumentError(what + ": material is not a PEM public key");
    }
    RETURN_IF_ERROR(CheckPublicKey(material->pkey.get(), key.algorithm, what));
  }
  return std::unique_ptr<VerifyKey>(new VerifyKey(key.kid, key.algorithm, std::move(material)));
}

Result<std::unique_ptr<VerifyKey>> VerifyKey::FromJwk(std::string_view jwk_json) {
  const Json jwk = Json::parse(jwk_json, nullptr, /*allow_exceptions=*/false);
  if (!jwk.is_object()) return InvalidArgumentError("JWK is not a JSON object");

  std::string kid;
  if (auto it = jwk.find("kid"); it != jwk.end()) {
    if (!it->is_string()) return InvalidArgumentError("JWK kid is not a string");
    kid = it->get<std::string>();
  }
  const std::string what = "JWK '" + kid + "'";
  auto kty_it = jwk.find("kty");
  if (kty_it == jwk.end() || !kty_it->is_string()) {
    return InvalidArgumentError(what + ": kty is missing or not a string");
  }
  const std::string kty = kty_it->get<std::string>();

  // Encryption keys and keys for algorithms we do not verify are skipped, not errors: a JWKS
  // published by an identity provider commonly carries them next to the signing keys.
  if (auto it = jwk.find("use"); it != jwk.end() && (!it->is_string() || *it != "sig")) {
    return std::unique_ptr<VerifyKey>();
  }
  if (auto it = jwk.find("key_ops"); it != jwk.end()) {
    if (!it->is_array()) return InvalidArgumentError(what + ": key_ops is not an array");
    bool verify = false;
    for (const Json& op : *it) verify = verify || (op.is_string() && op == "verify");
    if (!verify) return std::unique_ptr<VerifyKey>();
  }
  std::optional<JwtAlgorithm> alg;
  if (auto it = jwk.find("alg"); it != jwk.end()) {
    if (!it->is_string()) return InvalidArgumentError(what + ": alg is not a string");
    alg = JwtAlgorithmFromName(it->get_ref<const std::string&>());
    if (!alg) return std::unique_ptr<VerifyKey>();
  }

  auto material = std::make_unique<Material>();
  JwtAlgorithm bound;
  if (kty == "RSA") {
    bound = JwtAlgorithm::kRS256;
    if (alg && *alg != bound) {
      return InvalidArgumentError(what + ": alg " + std::string(JwtAlgorithmName(*alg)) +
                                  " does not fit kty RSA");
    }
    ASSIGN_OR_RETURN(material->pkey, RsaFromJwk(jwk, what));
  } else if (kty == "EC") {
    bound = JwtAlgorithm::kES256;
    auto crv = jwk.find("crv");
    if (crv == jwk.end() || !crv->is_string()) {
      return InvalidArgumentError(what + ": crv is missing or not a string");
    }
    if (*crv != "P-256") {
      if (alg) return InvalidArgumentError(what + ": ES256 needs crv P-256");
      return std::unique_ptr<VerifyKey>();
    }
    if (alg && *alg != bound) {
      return InvalidArgumentError(what + ": alg " + std::string(JwtAlgorithmName(*alg)) +
                                  " does not fit kty EC");
    }
    ASSIGN_OR_RETURN(material->pkey, P256FromJwk(jwk, what));
  } else if (kty == "oct") {
    bound = JwtAlgorithm::kHS256;
    if (alg && *alg != bound) {
      return InvalidArgumentError(what + ": alg " + std::string(JwtAlgorithmName(*alg)) +
                                  " does not fit kty oct");
    }
    ASSIGN_OR_RETURN(material->secret, JwkBytes(jwk, "k", what));
    RETURN_IF_ERROR(CheckHmacSecret(material->secret, what));
  } else {
    return std::unique_ptr<VerifyKey>();  // OKP and future key types.
  }
  if (material->pkey) RETURN_IF_ERROR(CheckPublicKey(material->pkey.get(), bound, what));
  return std::unique_ptr<VerifyKey>(new VerifyKey(std::move(kid), bound, std::move(material)));
}

bool VerifyKey::Verify(std::string_view signing_input, std::string_view signature) const {
  ErrorQueueGuard guard;
  switch (algorithm_) {
    case JwtAlgorithm::kHS256: {
      std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
      unsigned int mac_len = 0;
      if (HMAC(EVP_sha256(), material_->secret.data(), static_cast<int>(material_->secret.size()),
               Bytes(signing_input), signing_input.size(), mac.data(), &mac_len) == nullptr) {
        return false;
      }
      return signature.size() == mac_len &&
             CRYPTO_memcmp(mac.data(), signature.data(), mac_len) == 0;
    }
    case JwtAlgorithm::kRS256:
      if (signature.size() != static_cast<size_t>(EVP_PKEY_get_size(material_->pkey.get()))) {
        return false;
      }
      return VerifyDigest(material_->pkey.get(), /*rsa_pkcs1=*/true, signing_input,
                          Bytes(signature), signature.size());
    case JwtAlgorithm::kES256: {
      // JOSE carries r || s as two 32-byte big-endian integers (RFC 7518 §3.4); OpenSSL wants a
      // DER ECDSA-Sig-Value.
      if (signature.size() != kEs256SignatureBytes) return false;
      EcdsaSigPtr sig(ECDSA_SIG_new());
      BIGNUM* r = BN_bin2bn(Bytes(signature), 32, nullptr);
      BIGNUM* s = BN_bin2bn(Bytes(signature) + 32, 32, nullptr);
      if (!sig || !r || !s || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
        BN_free(r);
        BN_free(s);
        return false;
      }
      unsigned char* der = nullptr;
      const int der_len = i2d_ECDSA_SIG(sig.get(), &der);
      if (der_len <= 0) return false;
      const bool ok = VerifyDigest(material_->pkey.get(), /*rsa_pkcs1=*/false, signing_input, der,
                                   static_cast<size_t>(der_len));
      OPENSSL_free(der);
      return ok;
    }
  }
  return false;
}

Result<std::vector<std::unique_ptr<VerifyKey>>> ParseJwks(std::string_view jwks_json) {
  const Json doc = Json::parse(jwks_json, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) return InvalidArgumentError("JWKS is not a JSON object");
  auto keys = doc.find("keys");
  if (keys == doc.end() || !keys->is_array()) {
    return InvalidArgumentError("JWKS has no \"keys\" array");
  }
  std::vector<std::unique_ptr<VerifyKey>> out;
  for (size_t i = 0; i < keys->size(); ++i) {
    Result<std::unique_ptr<VerifyKey>> key = VerifyKey::FromJwk((*keys)[i].dump());
    if (!key.ok()) return key.status().WithContext("JWKS key " + std::to_string(i));
    if (*key) out.push_back(*std::move(key));
  }
  return out;
}

}  // namespace metald::auth::internal
