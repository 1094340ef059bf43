#include "metald/auth/testing/jwt_minter.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <memory>

#include "metald/auth/internal/jose.h"
#include "metald/base/check.h"

namespace metald::auth::testing_util {
namespace {

using Json = nlohmann::json;

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

std::string BioToString(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

KeyPair ToPems(EVP_PKEY* pkey) {
  KeyPair out;
  BIO* priv = BIO_new(BIO_s_mem());
  BIO* pub = BIO_new(BIO_s_mem());
  METALD_CHECK(priv != nullptr && pub != nullptr);
  METALD_CHECK(PEM_write_bio_PrivateKey(priv, pkey, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  METALD_CHECK(PEM_write_bio_PUBKEY(pub, pkey) == 1);
  out.private_pem = BioToString(priv);
  out.public_pem = BioToString(pub);
  BIO_free(priv);
  BIO_free(pub);
  return out;
}

PkeyPtr LoadPrivate(std::string_view pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  METALD_CHECK(bio != nullptr);
  PkeyPtr pkey(PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  METALD_CHECK(pkey != nullptr);
  return pkey;
}

PkeyPtr LoadPublic(std::string_view pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  METALD_CHECK(bio != nullptr);
  PkeyPtr pkey(PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  METALD_CHECK(pkey != nullptr);
  return pkey;
}

std::string BnParam(EVP_PKEY* pkey, const char* name, int pad_to) {
  BIGNUM* bn = nullptr;
  METALD_CHECK(EVP_PKEY_get_bn_param(pkey, name, &bn) == 1);
  const int len = pad_to > 0 ? pad_to : BN_num_bytes(bn);
  std::string out(static_cast<size_t>(len), '\0');
  METALD_CHECK(BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), len) == len);
  BN_free(bn);
  return out;
}

std::string DigestSign(EVP_PKEY* pkey, bool rsa, std::string_view input) {
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  EVP_PKEY_CTX* pctx = nullptr;
  METALD_CHECK(md != nullptr);
  METALD_CHECK(EVP_DigestSignInit(md, &pctx, EVP_sha256(), nullptr, pkey) == 1);
  if (rsa) METALD_CHECK(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1);
  size_t len = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(input.data());
  METALD_CHECK(EVP_DigestSign(md, nullptr, &len, in, input.size()) == 1);
  std::string sig(len, '\0');
  METALD_CHECK(EVP_DigestSign(md, reinterpret_cast<unsigned char*>(sig.data()), &len, in,
                              input.size()) == 1);
  sig.resize(len);
  EVP_MD_CTX_free(md);
  return sig;
}

}  // namespace

KeyPair GenerateRsaKeyPair(int bits) {
  PkeyPtr pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(bits)));
  METALD_CHECK(pkey != nullptr);
  return ToPems(pkey.get());
}

KeyPair GenerateEcP256KeyPair() {
  PkeyPtr pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  METALD_CHECK(pkey != nullptr);
  return ToPems(pkey.get());
}

std::string Base64Url(std::string_view bytes) { return internal::Base64UrlEncode(bytes); }

std::string Sign(std::string_view alg, std::string_view key, std::string_view input) {
  if (alg == "HS256") {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    METALD_CHECK(HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                      reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac,
                      &len) != nullptr);
    return std::string(reinterpret_cast<char*>(mac), len);
  }
  if (alg == "RS256") {
    PkeyPtr pkey = LoadPrivate(key);
    return DigestSign(pkey.get(), /*rsa=*/true, input);
  }
  if (alg == "ES256") {
    PkeyPtr pkey = LoadPrivate(key);
    const std::string der = DigestSign(pkey.get(), /*rsa=*/false, input);
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    ECDSA_SIG* sig = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size()));
    METALD_CHECK(sig != nullptr);
    std::string out(64, '\0');
    auto* o = reinterpret_cast<unsigned char*>(out.data());
    METALD_CHECK(BN_bn2binpad(ECDSA_SIG_get0_r(sig), o, 32) == 32);
    METALD_CHECK(BN_bn2binpad(ECDSA_SIG_get0_s(sig), o + 32, 32) == 32);
    ECDSA_SIG_free(sig);
    return out;
  }
  return std::string();
}

std::string MintJwtRaw(std::string_view sign_alg, std::string_view key, std::string_view header,
                       std::string_view payload) {
  std::string input = Base64Url(header) + "." + Base64Url(payload);
  return input + "." + Base64Url(Sign(sign_alg, key, input));
}

std::string MintJwt(std::string_view alg, std::string_view key, const Json& claims,
                    const Json& header_extra) {
  Json header = {{"alg", std::string(alg)}, {"typ", "JWT"}};
  if (header_extra.is_object()) {
    for (const auto& [name, value] : header_extra.items()) header[name] = value;
  }
  // Sign with the algorithm the caller asked for, even if header_extra overrode "alg": that is
  // how tests build algorithm-confusion tokens.
  return MintJwtRaw(alg, key, header.dump(), claims.dump());
}

Json PublicJwk(std::string_view public_pem, std::string_view kid, std::string_view alg) {
  PkeyPtr pkey = LoadPublic(public_pem);
  Json jwk;
  if (EVP_PKEY_is_a(pkey.get(), "RSA") == 1) {
    jwk["kty"] = "RSA";
    jwk["n"] = Base64Url(BnParam(pkey.get(), OSSL_PKEY_PARAM_RSA_N, 0));
    jwk["e"] = Base64Url(BnParam(pkey.get(), OSSL_PKEY_PARAM_RSA_E, 0));
  } else {
    METALD_CHECK(EVP_PKEY_is_a(pkey.get(), "EC") == 1);
    jwk["kty"] = "EC";
    jwk["crv"] = "P-256";
    jwk["x"] = Base64Url(BnParam(pkey.get(), OSSL_PKEY_PARAM_EC_PUB_X, 32));
    jwk["y"] = Base64Url(BnParam(pkey.get(), OSSL_PKEY_PARAM_EC_PUB_Y, 32));
  }
  jwk["kid"] = std::string(kid);
  jwk["use"] = "sig";
  if (!alg.empty()) jwk["alg"] = std::string(alg);
  return jwk;
}

Json SecretJwk(std::string_view secret, std::string_view kid, std::string_view alg) {
  Json jwk = {{"kty", "oct"}, {"k", Base64Url(secret)}, {"kid", std::string(kid)}};
  if (!alg.empty()) jwk["alg"] = std::string(alg);
  return jwk;
}

}  // namespace metald::auth::testing_util
