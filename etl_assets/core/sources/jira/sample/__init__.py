"""A generated, realistic Jira Cloud site and an in-process Jira REST v3 handler.

:func:`generate_sample_site` builds a deterministic :class:`JiraSite` (projects, issue
types, statuses and issues with ADF descriptions) from a seed. :class:`JiraSiteHandler`
answers the handful of Jira Cloud REST v3 endpoints the sync uses, with the response
shapes, paging rules and error bodies Jira Cloud uses; :func:`sample_transport` wraps it
for ``httpx.Client(transport=...)``.

Issues are written around ~34 topics (login problems, CSV exports, duplicate payments,
...) with paraphrased summaries and descriptions in English, German, French, Spanish and
Japanese, so that :func:`labelled_queries` can label natural-language queries with the
keys of the issues on each topic for retrieval-quality tests. The topic of each issue is
kept in ``JiraSite.topics`` only, never inside the issue's fields.

Served endpoints (everything else is a 404):

* ``GET  /rest/api/3/project/search``  PageBean of projects (``startAt``/``maxResults``,
  ``expand``, ``orderBy``, ``query``, ``keys``, ``id``, ``typeKey``)
* ``GET  /rest/api/3/project/{idOrKey}``, ``GET /rest/api/3/issue/{idOrKey}``
* ``GET  /rest/api/3/issuetype``, ``GET /rest/api/3/status``
* ``GET|POST /rest/api/3/search/jql``  enhanced search, ``nextPageToken`` paging, JQL subset
* ``POST /rest/api/3/search/approximate-count``
* ``GET  /rest/api/3/myself``, ``GET /rest/api/3/serverInfo``
* ``GET|POST /rest/api/{2,3,latest}/search``  410 Gone, as on Jira Cloud since CHANGE-2046

JQL subset: ``project``, ``key``/``issuekey``, ``id``, ``updated``/``created`` (also
``updatedDate``/``createdDate``), ``issuetype``/``type``, ``status``, ``statusCategory``
with ``= != > >= < <= in, not in``; ``AND``, ``OR``, ``NOT``, parentheses; ``ORDER BY``
on ``updated``, ``created``, ``key``, ``id``, ``project``. Date values use Jira's formats
(``"yyyy-MM-dd HH:mm"``, ``"yyyy/MM/dd HH:mm"``, ``yyyy-MM-dd``, ``yyyy/MM/dd``) at minute
granularity, interpreted as UTC (Jira uses the user's time zone), or relative periods
such as ``-5m``, ``-2d`` or ``"-1w 2d"``. As on Jira Cloud, a project or issue key that
does not exist is a 400, and a query with no search restriction is refused as unbounded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx

__all__ = [
    "JiraSite",
    "JiraSiteHandler",
    "generate_sample_site",
    "labelled_queries",
    "sample_transport",
    "format_jira_timestamp",
    "parse_jira_timestamp",
    "run_jql",
    "JqlError",
    "SITE_NOW",
]

# --------------------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------------------

#: "Now" of the generated site: every generated ``updated`` lies before this instant.
SITE_NOW = datetime(2026, 3, 10, 17, 45, tzinfo=UTC)
_CREATED_FROM = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
_CREATED_TO = datetime(2026, 2, 27, 18, 0, tzinfo=UTC)


def format_jira_timestamp(value: datetime) -> str:
    """``2026-03-04T10:15:30.123+0000`` (Jira's REST timestamp format, always UTC here)."""
    value = value.astimezone(UTC)
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}+0000"


@lru_cache(maxsize=8192)
def parse_jira_timestamp(value: str) -> datetime:
    """Parse a Jira REST timestamp such as ``2022-06-09T16:29:31.871-0700``."""
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")


# --------------------------------------------------------------------------------------
# Topic corpus
# --------------------------------------------------------------------------------------

_Texts = tuple[tuple[str, ...], tuple[str, ...]]  # (summaries, description sentences)


@dataclass(frozen=True)
class _Topic:
    id: str
    labels: tuple[str, ...]
    texts: dict[str, _Texts]  # language -> texts; always has "en"
    logs: tuple[str, ...] = ()


def _topic(
    topic_id: str,
    labels: Sequence[str],
    summaries: Sequence[str],
    sentences: Sequence[str],
    logs: Sequence[str] = (),
    **translations: tuple[Sequence[str], Sequence[str]],
) -> _Topic:
    texts: dict[str, _Texts] = {"en": (tuple(summaries), tuple(sentences))}
    for lang, (summ, sent) in translations.items():
        texts[lang] = (tuple(summ), tuple(sent))
    return _Topic(topic_id, tuple(labels), texts, tuple(logs))


_TOPICS: tuple[_Topic, ...] = (
    _topic(
        "login-unicode-password",
        ["login", "authentication"],
        [
            "Login fails when the password contains unicode characters",
            "Users with accented letters in their password cannot sign in",
            "Sign-in rejects valid passwords that include umlauts or emoji",
            "Password check fails for non-ASCII characters after the auth upgrade",
        ],
        [
            "Customers whose password contains characters such as ü, é or ß get an "
            "'invalid credentials' error even though the password is correct.",
            "The password is normalised differently on the signup form and on the "
            "login endpoint, so the stored hash never matches.",
            "Resetting the password to an ASCII-only value works around the problem.",
            "We see the failure on web and mobile, which points at the authentication service rather than the client.",
            "The issue started after the password hashing library was upgraded.",
        ],
        [
            "WARN  auth.PasswordVerifier - hash mismatch for account {n} (input normalisation NFC vs NFD)",
            "INFO  auth.LoginController - POST /login 401 locale=de-DE attempt=3",
        ],
        de=(
            [
                "Anmeldung schlägt fehl, wenn das Passwort Umlaute enthält",
                "Login mit Sonderzeichen im Passwort nicht möglich",
            ],
            [
                "Benutzer mit Umlauten wie ä, ö oder ü im Passwort erhalten die Meldung "
                "„Ungültige Anmeldedaten“, obwohl das Passwort korrekt ist.",
                "Das Passwort wird bei der Registrierung anders normalisiert als beim "
                "Login, deshalb stimmt der gespeicherte Hash nicht überein.",
                "Als Workaround hilft es, ein Passwort nur mit ASCII-Zeichen zu setzen.",
            ],
        ),
        fr=(
            [
                "La connexion échoue lorsque le mot de passe contient des accents",
                "Impossible de se connecter avec un mot de passe contenant des caractères spéciaux",
            ],
            [
                "Les utilisateurs dont le mot de passe contient é, è ou ç reçoivent "
                "« identifiants invalides » alors que le mot de passe est correct.",
                "Le mot de passe n'est pas normalisé de la même façon à l'inscription et à la connexion.",
                "Contournement : choisir un mot de passe composé uniquement de caractères ASCII.",
            ],
        ),
        es=(
            [
                "El inicio de sesión falla si la contraseña tiene tildes o la letra ñ",
                "No se puede entrar con contraseñas que incluyen caracteres especiales",
            ],
            [
                "Los usuarios con caracteres como ñ, á o ü en la contraseña reciben el "
                "error «credenciales no válidas» aunque la contraseña es correcta.",
                "La contraseña se normaliza de forma distinta en el registro y en el inicio de sesión.",
                "Cambiar la contraseña a una que solo use caracteres ASCII evita el problema.",
            ],
        ),
        ja=(
            [
                "パスワードに全角文字が含まれるとログインできない",
                "日本語を含むパスワードでサインインに失敗する",
            ],
            [
                "パスワードに全角文字や記号を含むユーザーは、正しいパスワードを入力しても"
                "「認証情報が無効です」と表示されます。",
                "登録時とログイン時でパスワードの正規化方法が異なるため、保存されたハッシュと一致しません。",
                "回避策として、半角英数字のみのパスワードに変更するとログインできます。",
            ],
        ),
    ),
    _topic(
        "sso-saml-expired",
        ["sso", "saml"],
        [
            "SSO login fails with 'SAML assertion expired' error",
            "SAML single sign-on rejects assertions from Okta after a few minutes",
            "Enterprise customers cannot log in through SSO: assertion no longer valid",
            "Clock skew causes SAML responses to be treated as expired",
        ],
        [
            "Users authenticating through the company identity provider are sent back "
            "to the login page with the message 'SAML assertion expired'.",
            "The NotOnOrAfter timestamp in the assertion is only five minutes ahead and "
            "our service provider allows no clock skew.",
            "The service provider host clock was found to be drifting by several minutes.",
            "Only tenants that use single sign-on with Okta or Azure AD are affected.",
            "Allowing a tolerance of a few minutes when validating the assertion conditions should fix it.",
        ],
        [
            "ERROR saml.AssertionValidator - assertion expired: "
            "NotOnOrAfter=2026-02-11T09:14:03Z now=2026-02-11T09:16:40Z",
            "WARN  saml.SsoCallback - rejecting response from idp=okta tenant={n}",
        ],
    ),
    _topic(
        "mfa-code-rejected",
        ["mfa", "security"],
        [
            "Two-factor codes from authenticator apps are rejected",
            "TOTP verification fails even with a freshly generated code",
            "MFA prompt says the one-time code is invalid",
            "Users locked out because authenticator codes are never accepted",
        ],
        [
            "After entering the six-digit code from Google Authenticator the user is told the code is invalid.",
            "The verification window only accepts the current 30-second step, so slightly slow users always fail.",
            "Several users got locked out after five failed attempts and had to contact support.",
            "Backup recovery codes still work, which suggests only the time-based check is broken.",
            "Accept one step before and after the current one to tolerate small clock differences.",
        ],
        ["WARN  mfa.TotpVerifier - code rejected for user {n}: expected step 59012345"],
    ),
    _topic(
        "session-logout-random",
        ["session"],
        [
            "Users are randomly logged out while working",
            "Session expires after a few minutes despite 'remember me'",
            "Unexpected sign-outs in the middle of editing a document",
            "Session cookie is dropped and users have to log in again",
        ],
        [
            "People report being kicked back to the login screen several times per hour, losing unsaved work.",
            "The session cookie is set without the SameSite attribute and some "
            "browsers discard it on cross-site redirects.",
            "It happens more often when several tabs are open at the same time.",
            "The refresh token is rotated on every request and parallel requests invalidate each other.",
            "Logs show the session store evicting entries much earlier than the configured timeout.",
        ],
        [
            "INFO  session.Store - evicted session {n} idle=312s ttl=28800s reason=capacity",
            "WARN  auth.RefreshToken - token reuse detected, revoking family for user {n}",
        ],
    ),
    _topic(
        "csv-export-truncated",
        ["export", "reports"],
        [
            "CSV export truncates large reports",
            "Exported CSV file stops after 10,000 rows",
            "Downloading a big report as CSV gives an incomplete file",
            "Report export silently cuts off rows beyond the first page",
        ],
        [
            "When a report has more than ten thousand rows, the downloaded CSV file "
            "ends abruptly without any error message.",
            "The export job streams rows but the HTTP response is closed when the proxy timeout is reached.",
            "Smaller reports export correctly, so the problem only shows up for large data sets.",
            "Finance uses these exports for month-end reconciliation and currently has to split reports by date range.",
            "Excel shows the last line cut in the middle of a field.",
        ],
        [
            "WARN  export.CsvWriter - client disconnected after 10000 rows (report_id={n})",
            "ERROR proxy - upstream timed out (60s) while reading response body",
        ],
        de=(
            [
                "CSV-Export schneidet große Berichte ab",
                "Exportierte CSV-Datei endet nach 10.000 Zeilen",
            ],
            [
                "Wenn ein Bericht mehr als zehntausend Zeilen hat, endet die "
                "heruntergeladene CSV-Datei mitten in einer Zeile.",
                "Kleinere Berichte werden vollständig exportiert, nur große Datenmengen sind betroffen.",
                "Die Buchhaltung braucht den vollständigen Export für den Monatsabschluss.",
            ],
        ),
        fr=(
            [
                "L'export CSV tronque les rapports volumineux",
                "Le fichier CSV exporté s'arrête après 10 000 lignes",
            ],
            [
                "Lorsqu'un rapport dépasse dix mille lignes, le fichier CSV téléchargé "
                "se termine brusquement sans message d'erreur.",
                "Les petits rapports s'exportent correctement, seuls les gros volumes sont touchés.",
                "L'équipe finance doit découper les rapports par période pour contourner le problème.",
            ],
        ),
        es=(
            [
                "La exportación a CSV corta los informes grandes",
                "El archivo CSV exportado se detiene en la fila 10.000",
            ],
            [
                "Cuando un informe tiene más de diez mil filas, el CSV descargado "
                "termina de golpe sin ningún mensaje de error.",
                "Los informes pequeños se exportan bien; solo fallan los conjuntos de datos grandes.",
                "El equipo de finanzas necesita la exportación completa para el cierre de mes.",
            ],
        ),
        ja=(
            [
                "CSVエクスポートで大きなレポートが途中で切れる",
                "1万行を超えるレポートをCSVで出力すると不完全なファイルになる",
            ],
            [
                "1万行を超えるレポートをダウンロードすると、CSVファイルがエラーなしで途中で終わってしまいます。",
                "小さいレポートは正しく出力されるため、大量データの場合のみ発生します。",
                "経理チームは月次締めのために完全なエクスポートを必要としています。",
            ],
        ),
    ),
    _topic(
        "pdf-invoice-currency",
        ["invoice", "pdf", "billing"],
        [
            "PDF invoice shows the wrong currency symbol",
            "Invoices for EUR customers are rendered with a dollar sign",
            "Currency symbol on generated invoice PDFs ignores the account currency",
            "Yen amounts on PDF invoices appear with the euro sign",
        ],
        [
            "Customers billed in euros receive PDF invoices where every amount is "
            "prefixed with '$' although the totals are correct.",
            "The PDF template formats amounts with the server default locale instead "
            "of the currency stored on the invoice.",
            "The HTML version of the invoice in the billing portal shows the correct symbol.",
            "Several customers asked for corrected invoices because their accounting department rejected them.",
            "The font embedded in the PDF does not contain the ₹ and ₩ glyphs either.",
        ],
        ["INFO  billing.InvoiceRenderer - rendering INV-{n} currency=EUR locale=en_US"],
        de=(
            [
                "PDF-Rechnung zeigt das falsche Währungssymbol",
                "Rechnungen in Euro werden mit Dollarzeichen erstellt",
            ],
            [
                "Kunden, die in Euro abgerechnet werden, erhalten PDF-Rechnungen, auf "
                "denen jeder Betrag mit „$“ beginnt.",
                "Die PDF-Vorlage verwendet das Standard-Gebietsschema des Servers statt der Währung der Rechnung.",
                "Mehrere Kunden haben korrigierte Rechnungen angefordert, weil ihre Buchhaltung sie abgelehnt hat.",
            ],
        ),
        fr=(
            [
                "La facture PDF affiche le mauvais symbole monétaire",
                "Les factures en euros sont générées avec le signe dollar",
            ],
            [
                "Les clients facturés en euros reçoivent des factures PDF où chaque montant est précédé de « $ ».",
                "Le modèle PDF formate les montants avec la locale par défaut du "
                "serveur au lieu de la devise de la facture.",
                "Plusieurs clients ont demandé des factures corrigées car leur comptabilité les a refusées.",
            ],
        ),
        es=(
            [
                "La factura en PDF muestra un símbolo de moneda incorrecto",
                "Las facturas en euros salen con el signo de dólar",
            ],
            [
                "Los clientes que pagan en euros reciben facturas en PDF en las que "
                "todos los importes llevan el símbolo «$».",
                "La plantilla del PDF usa la configuración regional del servidor en lugar de la moneda de la factura.",
                "Varios clientes han pedido facturas corregidas porque su departamento contable las rechazó.",
            ],
        ),
        ja=(
            [
                "PDF請求書の通貨記号が間違っている",
                "円建ての請求書にドル記号が表示される",
            ],
            [
                "日本円で請求されている顧客のPDF請求書で、すべての金額に「$」が付いています。",
                "PDFテンプレートが請求書の通貨ではなくサーバーの既定ロケールで金額を整形しています。",
                "経理部門から受理されないため、修正版の請求書を求める問い合わせが来ています。",
            ],
        ),
    ),
    _topic(
        "payment-webhook-duplicate",
        ["payments", "webhooks"],
        [
            "Payment webhook retries create duplicate charges",
            "Customers charged twice when the payment provider resends a webhook",
            "Duplicate payments after webhook timeout and retry",
            "Idempotency missing in payment webhook handler",
        ],
        [
            "When our webhook endpoint responds slowly, the payment provider retries "
            "the event and we capture the payment a second time.",
            "The handler does not store the event id, so the same 'payment_intent.succeeded' event is processed twice.",
            "Support has refunded about forty double charges this month.",
            "We should record processed event ids and ignore repeats instead of charging again.",
            "The retries happen within seconds, so a unique constraint on the event id would catch them.",
        ],
        [
            "WARN  payments.WebhookHandler - event evt_{n} received again (attempt 2)",
            "ERROR payments.Capture - duplicate capture for order {n}, amount=49.00 EUR",
        ],
        de=(
            [
                "Wiederholte Zahlungs-Webhooks führen zu doppelten Abbuchungen",
                "Kunden werden doppelt belastet, wenn der Zahlungsanbieter einen Webhook erneut sendet",
            ],
            [
                "Wenn unser Webhook-Endpunkt langsam antwortet, sendet der "
                "Zahlungsanbieter das Ereignis erneut und wir buchen die Zahlung ein "
                "zweites Mal ab.",
                "Der Handler speichert die Ereignis-ID nicht, deshalb wird dasselbe Ereignis doppelt verarbeitet.",
                "Der Support musste diesen Monat rund vierzig Doppelabbuchungen erstatten.",
            ],
        ),
        fr=(
            [
                "Les relances du webhook de paiement créent des doubles débits",
                "Clients débités deux fois quand le prestataire renvoie un webhook",
            ],
            [
                "Quand notre point de terminaison répond lentement, le prestataire de "
                "paiement renvoie l'événement et nous encaissons le paiement une "
                "deuxième fois.",
                "Le gestionnaire ne conserve pas l'identifiant de l'événement, qui est donc traité deux fois.",
                "Le support a remboursé une quarantaine de doubles paiements ce mois-ci.",
            ],
        ),
        es=(
            [
                "Los reintentos del webhook de pagos generan cobros duplicados",
                "Clientes cobrados dos veces cuando el proveedor reenvía un webhook",
            ],
            [
                "Cuando nuestro endpoint de webhooks responde despacio, el proveedor de "
                "pagos reintenta el evento y cobramos el pago por segunda vez.",
                "El manejador no guarda el identificador del evento, así que el mismo evento se procesa dos veces.",
                "Soporte ha reembolsado unos cuarenta cobros dobles este mes.",
            ],
        ),
        ja=(
            [
                "決済Webhookの再送で二重請求が発生する",
                "決済プロバイダーがWebhookを再送すると顧客に2回課金される",
            ],
            [
                "Webhookの応答が遅いと決済プロバイダーがイベントを再送し、同じ支払いを2回確定してしまいます。",
                "ハンドラーがイベントIDを保存していないため、同じイベントが二重に処理されます。",
                "今月はサポートが約40件の二重請求を返金しました。",
            ],
        ),
    ),
    _topic(
        "refund-stuck-pending",
        ["refunds", "payments"],
        [
            "Refunds stay in 'pending' status forever",
            "Customer refunds never complete after partial cancellation",
            "Refund requests stuck in processing for more than a week",
            "Pending refunds are not picked up by the settlement job",
        ],
        [
            "Refunds issued from the admin console show 'pending' and the money never reaches the customer's card.",
            "The nightly settlement job only looks at refunds created on the same day and skips older ones.",
            "Partial refunds on orders with several items are affected the most.",
            "Customers open chargebacks when the refund does not arrive within ten days.",
            "Manually re-triggering the refund from the provider dashboard completes it immediately.",
        ],
        [
            "INFO  refunds.SettlementJob - picked 0 refunds (window=2026-01-14)",
            "WARN  refunds.Refund - refund re_{n} pending for 9 days",
        ],
    ),
    _topic(
        "dark-mode-contrast",
        ["ui", "dark-mode", "accessibility"],
        [
            "Dark mode: poor text contrast on the settings page",
            "Settings labels are unreadable in dark theme",
            "Grey text on dark background fails contrast guidelines",
            "Dark theme makes disabled buttons invisible in settings",
        ],
        [
            "In dark mode the labels and help text on the settings page are dark grey "
            "on a black background and almost impossible to read.",
            "The contrast ratio is around 2:1, far below the 4.5:1 required for normal text.",
            "The light theme looks fine; only the dark palette uses the wrong token for secondary text.",
            "Disabled toggle buttons disappear completely against the background.",
            "Users with low vision have complained through the feedback widget.",
        ],
        [],
        de=(
            [
                "Dunkelmodus: schlechter Kontrast auf der Einstellungsseite",
                "Beschriftungen in den Einstellungen im dunklen Design kaum lesbar",
            ],
            [
                "Im Dunkelmodus sind Beschriftungen und Hilfetexte auf der "
                "Einstellungsseite dunkelgrau auf schwarzem Hintergrund und kaum "
                "lesbar.",
                "Das Kontrastverhältnis liegt bei etwa 2:1 und damit weit unter den geforderten 4,5:1.",
                "Im hellen Design ist alles in Ordnung, nur die dunkle Palette "
                "verwendet die falsche Farbe für Sekundärtext.",
            ],
        ),
        fr=(
            [
                "Mode sombre : contraste insuffisant sur la page des paramètres",
                "Les libellés des paramètres sont illisibles en thème sombre",
            ],
            [
                "En mode sombre, les libellés et textes d'aide de la page des "
                "paramètres sont gris foncé sur fond noir et presque illisibles.",
                "Le rapport de contraste est d'environ 2:1, bien en dessous des 4,5:1 exigés.",
                "Le thème clair est correct, seule la palette sombre utilise la "
                "mauvaise couleur pour le texte secondaire.",
            ],
        ),
        es=(
            [
                "Modo oscuro: poco contraste en la página de ajustes",
                "Las etiquetas de configuración no se leen con el tema oscuro",
            ],
            [
                "En modo oscuro, las etiquetas y los textos de ayuda de la página de "
                "ajustes son gris oscuro sobre fondo negro y casi no se leen.",
                "La relación de contraste ronda 2:1, muy por debajo del 4,5:1 exigido.",
                "El tema claro se ve bien; solo la paleta oscura usa el color equivocado para el texto secundario.",
            ],
        ),
        ja=(
            [
                "ダークモードで設定画面の文字のコントラストが低い",
                "ダークテーマで設定ページのラベルが読めない",
            ],
            [
                "ダークモードでは設定ページのラベルや説明文が黒い背景に濃いグレーで表示され、ほとんど読めません。",
                "コントラスト比は約2:1で、必要な4.5:1を大きく下回っています。",
                "ライトテーマは問題なく、ダークパレットだけが補助テキストに誤った色を使っています。",
            ],
        ),
    ),
    _topic(
        "mobile-push-delayed",
        ["mobile", "push-notifications"],
        [
            "Mobile push notifications arrive hours late",
            "Push notifications delayed on Android and iOS",
            "Users receive chat alerts long after the message was sent",
            "Notification delivery lag on phones after the queue migration",
        ],
        [
            "Push notifications for new messages reach phones thirty minutes to several hours after the event.",
            "The notification worker batches messages and the batch is only flushed when it is full.",
            "Since the migration to the new message queue, low-traffic tenants wait the longest.",
            "Android devices in battery-saving mode make the delay even worse because "
            "high-priority delivery is not requested.",
            "In-app notifications are instant, so only the push channel is affected.",
        ],
        [
            "INFO  push.Dispatcher - flushed batch size=500 oldest_age=5421s",
            "WARN  push.Fcm - message sent with priority=normal for device {n}",
        ],
        de=(
            [
                "Push-Benachrichtigungen auf dem Handy kommen stundenlang verspätet an",
                "Verzögerte Push-Nachrichten auf Android und iOS",
            ],
            [
                "Push-Benachrichtigungen zu neuen Nachrichten erreichen die Telefone "
                "erst dreißig Minuten bis mehrere Stunden später.",
                "Der Benachrichtigungsdienst sammelt Nachrichten und verschickt den Stapel erst, wenn er voll ist.",
                "Benachrichtigungen in der App kommen sofort, nur der Push-Kanal ist betroffen.",
            ],
        ),
        fr=(
            [
                "Les notifications push mobiles arrivent avec des heures de retard",
                "Notifications push retardées sur Android et iOS",
            ],
            [
                "Les notifications push des nouveaux messages arrivent sur les "
                "téléphones trente minutes à plusieurs heures après l'événement.",
                "Le service de notifications regroupe les messages et n'envoie le lot que lorsqu'il est plein.",
                "Les notifications dans l'application sont instantanées, seul le canal push est touché.",
            ],
        ),
        es=(
            [
                "Las notificaciones push del móvil llegan con horas de retraso",
                "Notificaciones push retrasadas en Android e iOS",
            ],
            [
                "Las notificaciones push de mensajes nuevos llegan a los teléfonos "
                "entre treinta minutos y varias horas después del evento.",
                "El servicio de notificaciones agrupa los mensajes y solo envía el lote cuando está lleno.",
                "Las notificaciones dentro de la aplicación son inmediatas; solo falla el canal push.",
            ],
        ),
        ja=(
            [
                "モバイルのプッシュ通知が数時間遅れて届く",
                "AndroidとiOSでプッシュ通知が遅延する",
            ],
            [
                "新着メッセージのプッシュ通知が、イベントから30分から数時間遅れてスマートフォンに届きます。",
                "通知ワーカーがメッセージをまとめて送信しており、バッチが満杯になるまで送られません。",
                "アプリ内通知はすぐに表示されるため、プッシュ通知だけの問題です。",
            ],
        ),
    ),
    _topic(
        "android-crash-startup",
        ["android", "crash"],
        [
            "Android app crashes on startup on Android 14",
            "App closes immediately after the splash screen on Pixel devices",
            "Crash at launch: IllegalStateException in the Android client",
            "Android users cannot open the app after updating to version 5.2",
        ],
        [
            "Right after the splash screen the Android app closes without any message.",
            "Crash reports point at a foreground service being started from the "
            "background, which Android 14 no longer allows.",
            "Only devices running Android 14 are affected; older versions start normally.",
            "Clearing the app data does not help, reinstalling version 5.1 does.",
            "The crash-free sessions rate dropped from 99.6% to 93% since the release.",
        ],
        [
            "FATAL AndroidRuntime - java.lang.IllegalStateException: Not allowed to "
            "start service Intent { cmp=com.example.app/.sync.SyncService }: app is in "
            "background",
            "    at android.app.ContextImpl.startServiceCommon(ContextImpl.java:1945)",
        ],
    ),
    _topic(
        "ios-keyboard-overlap",
        ["ios", "ui"],
        [
            "On iOS the keyboard covers the message input field",
            "Text field hidden behind the on-screen keyboard on iPhone",
            "Cannot see what I type in the comment box on iOS",
            "Keyboard overlaps the login form on small iPhones",
        ],
        [
            "When the on-screen keyboard opens, the input field stays where it is and ends up hidden behind it.",
            "The view does not react to keyboard frame change notifications, so it "
            "never scrolls the focused field into view.",
            "It is most visible on the iPhone SE and in landscape orientation.",
            "Users have to close the keyboard to check what they typed.",
            "Android handles the same screen correctly by resizing the window.",
        ],
    ),
    _topic(
        "search-index-stale",
        ["search", "indexing"],
        [
            "Search index out of date after reindex",
            "Newly created documents do not show up in search results",
            "Search returns deleted items after the nightly reindex",
            "Full reindex leaves the search index hours behind the database",
        ],
        [
            "After the nightly reindex, search keeps returning old titles and items that were deleted days ago.",
            "New documents only become searchable many hours after they are created.",
            "The reindex job writes into a new index but the alias is switched before the bulk load finishes.",
            "Incremental updates that arrive during the reindex are lost because they go to the old index.",
            "Support has to tell customers to wait until the next day to find their documents.",
        ],
        [
            "INFO  search.Reindexer - alias 'docs' switched to docs_20260211 (indexed 412000/1390000)",
            "WARN  search.Updater - write to docs_20260210 ignored, index is read-only",
        ],
        de=(
            [
                "Suchindex nach der Neuindizierung veraltet",
                "Neue Dokumente erscheinen nicht in den Suchergebnissen",
            ],
            [
                "Nach der nächtlichen Neuindizierung liefert die Suche weiterhin alte "
                "Titel und bereits gelöschte Einträge.",
                "Neue Dokumente sind erst viele Stunden nach dem Anlegen auffindbar.",
                "Der Alias wird auf den neuen Index umgestellt, bevor das Laden abgeschlossen ist.",
            ],
        ),
        fr=(
            [
                "Index de recherche obsolète après la réindexation",
                "Les nouveaux documents n'apparaissent pas dans les résultats de recherche",
            ],
            [
                "Après la réindexation nocturne, la recherche renvoie encore d'anciens "
                "titres et des éléments supprimés.",
                "Les nouveaux documents ne deviennent trouvables que plusieurs heures après leur création.",
                "L'alias bascule vers le nouvel index avant la fin du chargement.",
            ],
        ),
        es=(
            [
                "Índice de búsqueda desactualizado tras la reindexación",
                "Los documentos nuevos no aparecen en los resultados de búsqueda",
            ],
            [
                "Tras la reindexación nocturna, la búsqueda sigue devolviendo títulos "
                "antiguos y elementos ya borrados.",
                "Los documentos nuevos solo se pueden encontrar muchas horas después de crearlos.",
                "El alias apunta al índice nuevo antes de que termine la carga.",
            ],
        ),
        ja=(
            [
                "再インデックス後に検索インデックスが古いままになる",
                "新しく作成したドキュメントが検索結果に表示されない",
            ],
            [
                "夜間の再インデックス後も、検索結果に古いタイトルや削除済みの項目が表示されます。",
                "新しいドキュメントは作成から何時間も経たないと検索できません。",
                "一括投入が終わる前にエイリアスが新しいインデックスに切り替わっています。",
            ],
        ),
    ),
    _topic(
        "search-typo-tolerance",
        ["search", "relevance"],
        [
            "Search finds nothing when the query has a small typo",
            "No results for misspelled product names",
            "Fuzzy matching is not applied to search queries",
            "Searching 'recieve' returns zero hits instead of 'receive'",
        ],
        [
            "A single wrong letter in the query, for example 'recieve' instead of "
            "'receive', gives an empty result page.",
            "Fuzzy matching was disabled when the analyzer configuration was replaced.",
            "Competitor products handle typos and users expect the same from us.",
            "The 'did you mean' suggestion box is never shown either.",
            "Enabling edit distance one for terms longer than four characters would cover most cases.",
        ],
    ),
    _topic(
        "email-notifications-spam",
        ["email", "deliverability"],
        [
            "Notification emails land in the spam folder",
            "Password reset emails are flagged as spam by Gmail",
            "Outgoing mail fails DKIM checks after the domain change",
            "Customers do not receive our emails because of SPF failures",
        ],
        [
            "Many customers find our notification emails, including password resets, in their spam folder.",
            "After we moved to the new sending domain, the SPF record was not updated "
            "and DKIM signatures fail validation.",
            "Gmail and Outlook show a warning that the sender could not be verified.",
            "The share of delivered emails dropped from 98% to about 70% within a week.",
            "Publishing the correct DNS records and a DMARC policy should restore delivery.",
        ],
        [
            "WARN  mail.Bounce - 550 5.7.26 unauthenticated email from example.com is "
            "not accepted due to domain's DMARC policy",
        ],
        de=(
            [
                "Benachrichtigungs-E-Mails landen im Spam-Ordner",
                "E-Mails zum Zurücksetzen des Passworts werden als Spam markiert",
            ],
            [
                "Viele Kunden finden unsere Benachrichtigungen, auch E-Mails zum "
                "Zurücksetzen des Passworts, im Spam-Ordner.",
                "Nach dem Wechsel auf die neue Absenderdomain wurde der SPF-Eintrag "
                "nicht angepasst und die DKIM-Signatur schlägt fehl.",
                "Die Zustellquote ist innerhalb einer Woche von 98 % auf etwa 70 % gefallen.",
            ],
        ),
        fr=(
            [
                "Les e-mails de notification arrivent dans les spams",
                "Les e-mails de réinitialisation du mot de passe sont classés comme spam",
            ],
            [
                "Beaucoup de clients trouvent nos e-mails de notification, y compris "
                "les réinitialisations de mot de passe, dans leurs courriers "
                "indésirables.",
                "Depuis le changement de domaine d'envoi, l'enregistrement SPF n'a pas "
                "été mis à jour et la signature DKIM échoue.",
                "Le taux de distribution est passé de 98 % à environ 70 % en une semaine.",
            ],
        ),
        es=(
            [
                "Los correos de notificación llegan a la carpeta de spam",
                "Los correos para restablecer la contraseña se marcan como spam",
            ],
            [
                "Muchos clientes encuentran nuestros correos de notificación, "
                "incluidos los de restablecer contraseña, en la carpeta de spam.",
                "Tras el cambio al nuevo dominio de envío no se actualizó el registro "
                "SPF y la firma DKIM no se valida.",
                "La tasa de entrega bajó del 98 % a cerca del 70 % en una semana.",
            ],
        ),
        ja=(
            [
                "通知メールが迷惑メールフォルダに入る",
                "パスワード再設定メールがスパム扱いされる",
            ],
            [
                "パスワード再設定を含む通知メールが、多くの顧客の迷惑メールフォルダに振り分けられています。",
                "送信ドメインを変更した際にSPFレコードが更新されず、DKIM署名の検証に失敗しています。",
                "1週間で配信率が98%から約70%に低下しました。",
            ],
        ),
    ),
    _topic(
        "timezone-due-dates",
        ["timezone", "dates"],
        [
            "Due dates shown one day early for users west of UTC",
            "Deadline shifts by a day depending on the viewer's time zone",
            "Calendar view displays tasks on the wrong date across time zones",
            "Date-only fields converted to midnight UTC and shown as the previous day",
        ],
        [
            "A task due on 14 March appears as due on 13 March for colleagues in New York and San Francisco.",
            "The due date is stored as midnight UTC and the browser converts it to local time before formatting.",
            "Reminder emails are sent a day too early for the same users.",
            "Date-only values should be treated as calendar dates without any time zone conversion.",
            "Teams spread across Europe and the Americas are confused about which deadline is correct.",
        ],
        [
            "DEBUG ui.DateFormat - dueDate=2026-03-14T00:00:00Z tz=America/New_York rendered=2026-03-13",
        ],
        de=(
            [
                "Fälligkeitsdatum wird je nach Zeitzone einen Tag zu früh angezeigt",
                "Termine verschieben sich um einen Tag für Nutzer in anderen Zeitzonen",
            ],
            [
                "Eine Aufgabe, die am 14. März fällig ist, erscheint für Kollegen in New York als am 13. März fällig.",
                "Das Datum wird als Mitternacht UTC gespeichert und der Browser rechnet "
                "es vor der Anzeige in die Ortszeit um.",
                "Reine Datumswerte sollten ohne Zeitzonenumrechnung behandelt werden.",
            ],
        ),
        fr=(
            [
                "Les dates d'échéance s'affichent un jour trop tôt selon le fuseau horaire",
                "La date limite change d'un jour selon le fuseau horaire de l'utilisateur",
            ],
            [
                "Une tâche due le 14 mars apparaît comme due le 13 mars pour les collègues de New York.",
                "La date est enregistrée à minuit UTC et le navigateur la convertit en "
                "heure locale avant de l'afficher.",
                "Les valeurs de date seule devraient être traitées sans conversion de fuseau horaire.",
            ],
        ),
        es=(
            [
                "Las fechas de vencimiento aparecen un día antes según la zona horaria",
                "La fecha límite cambia un día según la zona horaria del usuario",
            ],
            [
                "Una tarea que vence el 14 de marzo aparece con vencimiento el 13 de "
                "marzo para los compañeros de Nueva York.",
                "La fecha se guarda como medianoche UTC y el navegador la convierte a "
                "la hora local antes de mostrarla.",
                "Los valores que son solo fecha deberían tratarse sin conversión de zona horaria.",
            ],
        ),
        ja=(
            [
                "タイムゾーンによって期日が1日前にずれて表示される",
                "利用者のタイムゾーンで締め切り日が変わってしまう",
            ],
            [
                "3月14日が期日のタスクが、ニューヨークの同僚には3月13日と表示されます。",
                "期日がUTCの午前0時として保存され、ブラウザが現地時刻に変換してから表示しています。",
                "日付のみの値はタイムゾーン変換をせずに扱うべきです。",
            ],
        ),
    ),
    _topic(
        "file-upload-large",
        ["uploads", "storage"],
        [
            "Uploading files larger than 2 GB fails at 99%",
            "Large video uploads abort with a network error",
            "Multipart upload of big attachments never completes",
            "Attachments over two gigabytes cannot be uploaded",
        ],
        [
            "Uploading a large video file runs until almost the end and then fails with 'network error'.",
            "The upload service keeps the file size in a 32-bit integer, which overflows above 2 GB.",
            "Files below two gigabytes upload without problems.",
            "Retrying starts the whole upload from the beginning because resumable uploads are not enabled.",
            "Media customers depend on uploading raw footage and are blocked.",
        ],
        [
            "ERROR upload.MultipartAssembler - part offset overflow: -2147418112",
            "WARN  upload.Gateway - 413 Request Entity Too Large for upload {n}",
        ],
    ),
    _topic(
        "image-thumbnails-missing",
        ["images", "thumbnails"],
        [
            "Image thumbnails are missing in the gallery",
            "Thumbnails not generated for HEIC photos from iPhones",
            "Broken image icons instead of previews in the attachment list",
            "Preview images never appear for newly uploaded pictures",
        ],
        [
            "The gallery shows a broken image icon instead of a preview for many recent uploads.",
            "The thumbnail worker cannot decode HEIC files, which is the default photo format on iPhones.",
            "Failed thumbnail jobs are not retried, so the preview stays missing forever.",
            "Opening the original image works; only the small previews are affected.",
            "Converting HEIC to JPEG before generating the preview would solve most cases.",
        ],
        ["ERROR thumbs.Worker - unsupported image format 'heic' for attachment {n}"],
    ),
    _topic(
        "api-rate-limit-429",
        ["api", "rate-limiting"],
        [
            "Partners hit HTTP 429 rate limits on the public API",
            "API returns 'Too Many Requests' far below the documented limit",
            "Rate limiter counts requests per IP instead of per API key",
            "Integration sync fails because of aggressive throttling",
        ],
        [
            "Partner integrations receive 429 Too Many Requests even though they send "
            "far fewer requests than the documented limit.",
            "The rate limiter groups clients by IP address, so partners behind a shared NAT gateway share one budget.",
            "The Retry-After header is missing, so clients retry immediately and make things worse.",
            "Counting requests per API key instead of per address would match the documentation.",
            "Two large partners paused their nightly sync because of the errors.",
        ],
        [
            "WARN  gateway.RateLimiter - 429 for 203.0.113.17 bucket=ip limit=600/min key=pk_live_{n}",
        ],
    ),
    _topic(
        "dashboard-slow",
        ["performance", "dashboard"],
        [
            "Dashboard takes more than 30 seconds to load",
            "Home dashboard is extremely slow for large workspaces",
            "Slow dashboard caused by hundreds of database queries per widget",
            "Page load time of the analytics dashboard regressed badly",
        ],
        [
            "Opening the dashboard in a workspace with many projects takes thirty seconds or more.",
            "Each widget loads its data with one query per project, resulting in hundreds of database round trips.",
            "Profiling shows most of the time is spent waiting for the database, not rendering.",
            "Caching the aggregated numbers for a minute would make the page feel instant.",
            "Customers have started to complain that the product feels sluggish.",
        ],
        ["INFO  perf.RequestTimer - GET /dashboard 31876ms db_queries=742"],
    ),
    _topic(
        "worker-memory-leak",
        ["memory", "workers"],
        [
            "Background worker memory grows until it is killed (OOM)",
            "Memory leak in the job worker after the library upgrade",
            "Worker pods restarted every few hours with OOMKilled",
            "Queue consumer keeps references to finished jobs and leaks memory",
        ],
        [
            "The background worker's memory usage grows steadily and the container is "
            "killed when it reaches the limit.",
            "A heap dump shows that finished job objects are kept in a module-level cache that is never cleared.",
            "Every restart drops the jobs that were running at that moment.",
            "The leak appeared after upgrading the HTTP client library used by the worker.",
            "Until it is fixed, the worker is restarted by a cron job every four hours.",
        ],
        [
            "WARN  kubelet - container worker OOMKilled (limit 2Gi, usage 2.01Gi) restart_count=17",
            "INFO  worker.Main - rss=1834MB jobs_cached={n}",
        ],
    ),
    _topic(
        "db-migration-lock",
        ["database", "migrations"],
        [
            "Database migration locks the orders table and causes downtime",
            "Schema migration blocks writes for several minutes",
            "Adding a column with a default value locked production",
            "Deploy caused an outage because of a long-running migration lock",
        ],
        [
            "During the last deployment a schema migration held an exclusive lock on "
            "the orders table for eleven minutes.",
            "All checkout requests timed out while they waited for the lock.",
            "Adding a column with a default value rewrites the entire table on this database version.",
            "Migrations should be split into smaller steps and run with a lock timeout.",
            "We need a checklist for reviewing migrations before they reach production.",
        ],
        [
            "ERROR db.Pool - timeout acquiring connection after 30000ms "
            "(waiting on AccessExclusiveLock relation=orders)",
        ],
    ),
    _topic(
        "tls-certificate-expired",
        ["tls", "certificates"],
        [
            "TLS certificate expired on the staging environment",
            "Browsers show 'your connection is not private' for the API domain",
            "Certificate renewal job failed silently",
            "Expired SSL certificate breaks webhooks to customer endpoints",
        ],
        [
            "The TLS certificate for the staging API expired and all clients fail with a certificate error.",
            "The automatic renewal job has been failing for weeks because the DNS challenge credentials were rotated.",
            "Nobody noticed because the job does not alert on failure.",
            "We need monitoring that warns at least fourteen days before any certificate expires.",
            "Some customers pin our certificate and will need the new fingerprint.",
        ],
        [
            "ERROR certbot - challenge failed for domain api.staging.example.com: DNS problem: NXDOMAIN",
        ],
    ),
    _topic(
        "autoscaling-scale-down",
        ["autoscaling", "cost"],
        [
            "Cluster autoscaler never scales down idle nodes",
            "Cloud bill doubled because idle nodes are not removed",
            "Nodes stay up at night although the load is minimal",
            "Scaling down blocked by pods without a disruption budget",
        ],
        [
            "At night the cluster keeps all forty nodes although CPU usage is below ten percent.",
            "The autoscaler refuses to remove nodes because several pods use local storage.",
            "Our cloud costs doubled compared to last quarter.",
            "Marking those pods as safe to evict would let the autoscaler shrink the cluster.",
            "Scaling up works fine when traffic increases in the morning.",
        ],
        [
            "INFO  cluster-autoscaler - node ip-10-0-3-17 cannot be removed: pod with local storage present",
        ],
    ),
    _topic(
        "missing-translations",
        ["i18n", "translations"],
        [
            "Untranslated English strings in the German user interface",
            "Missing translations on the new billing pages",
            "Translation keys shown instead of text in the French UI",
            "New settings screen is only partly localized",
        ],
        [
            "Several buttons and error messages on the new pages are still in English "
            "when the interface language is German or French.",
            "Some places even show the raw translation key, for example 'billing.plan.upgrade_cta'.",
            "The new strings were never sent to the translation vendor.",
            "Our release checklist should block deployment when translation files are incomplete.",
            "Customers in the DACH region reported it as unprofessional.",
        ],
        [
            "WARN  i18n.Loader - missing key 'billing.plan.upgrade_cta' for locale de-DE, falling back to en",
        ],
        de=(
            [
                "Nicht übersetzte englische Texte in der deutschen Oberfläche",
                "Fehlende Übersetzungen auf den neuen Abrechnungsseiten",
            ],
            [
                "Mehrere Schaltflächen und Fehlermeldungen auf den neuen Seiten sind "
                "noch auf Englisch, obwohl die Oberfläche auf Deutsch eingestellt ist.",
                "An manchen Stellen wird sogar der technische Übersetzungsschlüssel angezeigt.",
                "Die neuen Texte wurden nie an das Übersetzungsbüro geschickt.",
            ],
        ),
        fr=(
            [
                "Textes anglais non traduits dans l'interface française",
                "Traductions manquantes sur les nouvelles pages de facturation",
            ],
            [
                "Plusieurs boutons et messages d'erreur des nouvelles pages restent en "
                "anglais alors que l'interface est en français.",
                "À certains endroits, c'est même la clé de traduction brute qui s'affiche.",
                "Les nouveaux textes n'ont jamais été envoyés au prestataire de traduction.",
            ],
        ),
        es=(
            [
                "Textos en inglés sin traducir en la interfaz en español",
                "Faltan traducciones en las nuevas páginas de facturación",
            ],
            [
                "Varios botones y mensajes de error de las páginas nuevas siguen en "
                "inglés aunque la interfaz está en español.",
                "En algunos sitios incluso aparece la clave de traducción en bruto.",
                "Los textos nuevos nunca se enviaron al proveedor de traducción.",
            ],
        ),
        ja=(
            [
                "日本語画面に英語のまま翻訳されていない文言がある",
                "新しい請求ページの翻訳が抜けている",
            ],
            [
                "表示言語を日本語にしていても、新しいページのボタンやエラーメッセージが英語のままです。",
                "翻訳キーがそのまま表示されている箇所もあります。",
                "新しい文言が翻訳会社に送られていませんでした。",
            ],
        ),
    ),
    _topic(
        "screen-reader-buttons",
        ["accessibility", "a11y"],
        [
            "Screen reader does not announce icon-only buttons",
            "VoiceOver reads 'button' without a label in the toolbar",
            "Icon buttons lack accessible names for NVDA users",
            "Toolbar is unusable with assistive technology",
        ],
        [
            "Blind users navigating the editor with a screen reader only hear 'button' for every icon in the toolbar.",
            "The icon buttons have no aria-label and the tooltip text is not exposed to assistive technology.",
            "Keyboard focus also skips the overflow menu.",
            "This blocks a public sector customer that requires WCAG 2.1 AA compliance.",
            "An automated accessibility check in CI would prevent regressions.",
        ],
    ),
    _topic(
        "gdpr-deletion-backups",
        ["gdpr", "privacy"],
        [
            "Account deletion requests do not remove data from backups",
            "GDPR erasure leaves personal data in analytics exports",
            "Deleted users still appear in the data warehouse",
            "Right-to-be-forgotten process incomplete for archived records",
        ],
        [
            "When a user asks for their account to be deleted, the production database "
            "is cleaned but copies remain in backups and analytics exports.",
            "The data warehouse still contains names and email addresses of users deleted months ago.",
            "Legal says we must document how long backups are kept and make sure deleted data is not restored.",
            "A deletion log that is replayed after every restore would close the gap.",
            "A data protection authority inquiry mentions this exact case.",
        ],
        [
            "INFO  privacy.ErasureJob - erased user {n} from primary db; 3 downstream systems not covered",
        ],
    ),
    _topic(
        "invite-link-expired",
        ["onboarding", "invitations"],
        [
            "Invitation links expire before new users can accept them",
            "New team members get 'invite expired' the next morning",
            "Invite emails valid for only one hour",
            "Onboarding blocked because invitation tokens time out too quickly",
        ],
        [
            "New colleagues who open their invitation email the next day are told the link has expired.",
            "The invitation token lifetime was accidentally set to one hour instead of seven days.",
            "Admins have to resend invitations several times, which is frustrating during onboarding.",
            "Expired invitations should offer a button to request a new link.",
            "Large customers onboarding hundreds of users are hit the hardest.",
        ],
        [
            "WARN  invites.Accept - token expired issued_at=2026-02-02T08:00:00Z ttl=3600s",
        ],
    ),
    _topic(
        "calendar-sync-duplicates",
        ["integrations", "calendar"],
        [
            "Google Calendar sync creates duplicate events",
            "Every sync run adds the same meeting again to Google Calendar",
            "Duplicate calendar entries after reconnecting the Google integration",
            "Calendar integration duplicates recurring events",
        ],
        [
            "Each time the calendar sync runs, meetings are added again, and some "
            "users now have five copies of the same event.",
            "The sync matches events by title and start time instead of the stable event id.",
            "Recurring events are affected the most because each occurrence is treated as a new event.",
            "Reconnecting the integration makes it worse because the stored sync token is discarded.",
            "Users have to delete the duplicates by hand.",
        ],
        ["INFO  calendar.Sync - created 214 events, updated 0, matched 0 (token=null)"],
    ),
    _topic(
        "slack-integration-disconnects",
        ["integrations", "slack"],
        [
            "Slack integration disconnects every few days",
            "Slack notifications stop until the app is reinstalled",
            "Slack OAuth token not refreshed, integration silently stops",
            "Channel alerts from our app no longer reach Slack",
        ],
        [
            "The Slack integration stops posting messages after a few days and the "
            "workspace admin has to reconnect it.",
            "Slack now issues expiring tokens and we never use the refresh token to renew them.",
            "No error is shown in our settings page; messages simply stop arriving.",
            "Teams rely on these alerts for incidents and missed several of them.",
            "Renewing the token before it expires and alerting the admin on failure would fix it.",
        ],
        ["ERROR slack.Client - chat.postMessage failed: token_expired (team=T0{n})"],
    ),
    _topic(
        "stale-prices-cache",
        ["checkout", "caching"],
        [
            "Product pages show old prices after a price change",
            "Cached prices differ from the amount charged at checkout",
            "Price updates take hours to appear because of the CDN cache",
            "Stale pricing in the shop after the catalogue import",
        ],
        [
            "After the marketing team changed prices, product pages kept showing the old amount for several hours.",
            "Customers see one price on the product page and a different one in the cart, which causes complaints.",
            "The CDN caches product pages for six hours and nothing purges them when prices change.",
            "Purging the affected pages after a catalogue import would keep prices consistent.",
            "Some customers think it is a bait-and-switch tactic.",
        ],
        ["INFO  cdn.Purge - 0 urls purged after catalogue import batch {n}"],
    ),
    _topic(
        "coupon-not-applied",
        ["checkout", "promotions"],
        [
            "Coupon code not applied at checkout",
            "Discount code accepted but the total does not change",
            "Promo codes fail for customers paying with PayPal",
            "Voucher disappears when the shipping address is changed",
        ],
        [
            "Customers enter a valid promotion code, get the message 'coupon applied', "
            "but the order total stays the same.",
            "Changing the shipping address recalculates the cart and drops the discount.",
            "The issue only happens with PayPal because the total is sent before the discount is recalculated.",
            "Marketing had to pause the spring campaign because of the complaints.",
            "Recalculating discounts as the last step before payment would solve it.",
        ],
        [
            "WARN  checkout.Cart - coupon SPRING25 removed during recalculation (reason=address_changed)",
        ],
    ),
    _topic(
        "backup-restore-fails",
        ["backups", "disaster-recovery"],
        [
            "Restoring from backup fails with checksum errors",
            "Disaster recovery test: database restore does not complete",
            "Backup archives are corrupted and cannot be restored",
            "Point-in-time recovery fails because WAL segments are missing",
        ],
        [
            "During the quarterly disaster recovery drill the database restore stopped with checksum errors.",
            "Several write-ahead log segments are missing from the backup bucket, so "
            "point-in-time recovery is impossible.",
            "The backup job reports success even when uploading some files failed.",
            "Nobody had tried a full restore since the storage migration last year.",
            "We should verify every backup by restoring it automatically into a scratch environment.",
        ],
        ["ERROR restore - could not find WAL segment 00000001000004A2000000F3"],
    ),
    _topic(
        "audit-log-gaps",
        ["audit", "security"],
        [
            "Admin actions missing from the audit log",
            "Audit trail does not record permission changes",
            "Security review: role changes are not logged",
            "Audit log export has gaps for bulk operations",
        ],
        [
            "When an administrator changes user roles in bulk, nothing appears in the audit log.",
            "Only single edits made through the user interface are recorded; API calls and bulk operations are not.",
            "Our SOC 2 auditor flagged the missing entries as a finding.",
            "Every permission change should produce an audit event with actor, target and old and new values.",
            "Customers use the audit log export for their own compliance reports.",
        ],
        ["DEBUG audit.Emitter - skipped event for bulk operation op=roles.update"],
    ),
)

_TOPIC_BY_ID = {t.id: t for t in _TOPICS}

#: (query, topic id). Worded unlike the summaries; a few in German and French.
_QUERY_TOPICS: tuple[tuple[str, str], ...] = (
    ("people with accented letters in their password can't log in", "login-unicode-password"),
    ("single sign-on rejected by the identity provider because of clock drift", "sso-saml-expired"),
    ("one-time codes from the authenticator app are not accepted", "mfa-code-rejected"),
    ("users get signed out unexpectedly and lose their unsaved work", "session-logout-random"),
    ("spreadsheet download of a big report is incomplete", "csv-export-truncated"),
    ("invoice document shows a dollar sign for customers who pay in euros", "pdf-invoice-currency"),
    ("customers billed twice because the payment provider resent the event", "payment-webhook-duplicate"),
    ("money returned to customers never arrives on their card", "refund-stuck-pending"),
    ("hard to read grey text in the night theme", "dark-mode-contrast"),
    ("phone alerts about new messages show up much later", "mobile-push-delayed"),
    ("app closes right after launch on the newest Android version", "android-crash-startup"),
    ("search shows removed documents and misses recently added ones", "search-index-stale"),
    ("our emails go to junk because of wrong DNS records", "email-notifications-spam"),
    ("deadlines appear on the previous day for colleagues in America", "timezone-due-dates"),
    ("huge video upload fails right before it finishes", "file-upload-large"),
    ("partner integrations throttled with too many requests errors", "api-rate-limit-429"),
    ("background job process keeps using more RAM until it crashes", "worker-memory-leak"),
    ("outage during deployment because a schema change locked a table", "db-migration-lock"),
    ("calendar integration adds the same meeting several times", "calendar-sync-duplicates"),
    ("discount voucher does not reduce the order total", "coupon-not-applied"),
    ("Export großer Berichte als CSV-Datei ist unvollständig", "csv-export-truncated"),
    ("facture PDF avec le mauvais symbole de devise", "pdf-invoice-currency"),
)

# --------------------------------------------------------------------------------------
# Site furniture: users, projects, categories, issue types, statuses
# --------------------------------------------------------------------------------------

# (display name, time zone, active)
_USERS: tuple[tuple[str, str, bool], ...] = (
    ("Anna Schmidt", "Europe/Berlin", True),
    ("Jürgen Weiß", "Europe/Berlin", True),
    ("Zoë Martin", "Europe/Paris", True),
    ("François Dubois", "Europe/Paris", True),
    ("José Álvarez", "Europe/Madrid", True),
    ("María Fernández", "America/Mexico_City", True),
    ("山田 太郎", "Asia/Tokyo", True),
    ("佐藤 花子", "Asia/Tokyo", True),
    ("Анна Иванова", "Europe/Berlin", True),
    ("Priya Natarajan", "Asia/Kolkata", True),
    ("Liam O'Connor", "Europe/Dublin", True),
    ("Chloé Nguyễn", "America/Toronto", True),
    ("Sam Taylor", "America/New_York", True),
    ("Olivia Chen", "America/Los_Angeles", True),
    ("Björn Lindqvist", "Europe/Stockholm", False),
)

# (id, name, description)
_CATEGORIES: tuple[tuple[str, str, str], ...] = (
    ("10000", "Engineering", "Product development teams"),
    ("10001", "Operations", "Infrastructure, reliability and internal tooling"),
    ("10002", "Kundenservice", "Support-Teams für Kunden in allen Regionen"),
    ("10003", "Go-to-market", ""),
    ("10004", "Finance & Legal", "Billing, contracts and compliance"),
)


@dataclass(frozen=True)
class _ProjectSpec:
    key: str
    name: str
    type_key: str  # software | business | service_desk
    team_managed: bool
    lang: str  # preferred language of its issues
    category: int | None  # index into _CATEGORIES
    description: str
    url: str | None = None
    weight: float = 1.0  # relative share of issues


_PROJECTS: tuple[_ProjectSpec, ...] = (
    _ProjectSpec(
        "PAY",
        "Payments Platform",
        "software",
        False,
        "en",
        0,
        "Card payments, payouts and payment provider integrations.",
        "https://wiki.example.com/payments",
        1.6,
    ),
    _ProjectSpec(
        "ZV",
        "Zahlungsverkehr – Übersicht",
        "business",
        False,
        "de",
        4,
        "Überblick über alle Zahlungsströme und Abstimmungen.",
    ),
    _ProjectSpec("JPSUP", "日本語サポート", "service_desk", False, "ja", 2, "日本のお客様向けサポート窓口"),
    _ProjectSpec(
        "CAFE", "Café Opérations", "business", True, "fr", None, "Opérations quotidiennes des cafés partenaires."
    ),
    _ProjectSpec("LAUNCH", "🚀 Launch Squad", "software", True, "en", 3, ""),
    _ProjectSpec("PODD", "Поддержка", "service_desk", False, "en", 2, "Служба поддержки клиентов"),
    _ProjectSpec("MOB", "Mobile Apps", "software", False, "en", 0, "iOS and Android clients.", None, 1.5),
    _ProjectSpec(
        "WEB",
        "Web Frontend",
        "software",
        False,
        "en",
        0,
        "Single-page application and design system adoption.",
        None,
        1.5,
    ),
    _ProjectSpec(
        "IAM",
        "Identity & Access",
        "software",
        False,
        "en",
        0,
        "Login, SSO, MFA and sessions.",
        "https://wiki.example.com/iam",
        1.3,
    ),
    _ProjectSpec("SRCH", "Search Relevance", "software", True, "en", 0, "Indexing and ranking."),
    _ProjectSpec("DWH", "Data Warehouse", "software", False, "en", 1, ""),
    _ProjectSpec("BILL", "Billing & Invoicing", "software", False, "en", 4, "Invoices, credit notes and tax."),
    _ProjectSpec("NOTIF", "Notifications Service", "software", False, "en", 0, "Email, push and in-app notifications."),
    _ProjectSpec("REP", "Reporting & Exports", "software", False, "en", 0, "Reports, dashboards and data exports."),
    _ProjectSpec("DS", "Design System", "software", True, "en", 0, "Shared UI components, tokens and themes."),
    _ProjectSpec(
        "INFRA",
        "Infrastructure",
        "software",
        False,
        "en",
        1,
        "Kubernetes clusters, networking and databases.",
        None,
        1.4,
    ),
    _ProjectSpec(
        "SRE",
        "Site Reliability",
        "software",
        False,
        "en",
        1,
        "Incident response and on-call.",
        "https://status.example.com",
    ),
    _ProjectSpec("CS", "Customer Success", "business", False, "en", 3, "Escalations from key accounts."),
    _ProjectSpec("MKT", "Marketing Website", "business", True, "en", 3, "", None, 0.5),
    _ProjectSpec("L10N", "Localization", "software", False, "en", 0, "Translations for all supported languages."),
    _ProjectSpec("SEC", "Security Review", "software", False, "en", 1, "Security findings and audits."),
    _ProjectSpec("PARTNER", "Partner Integrations", "software", False, "en", 0, "Public API and partner connectors."),
    _ProjectSpec(
        "ONB", "Onboarding Flow", "software", True, "en", None, "Sign-up, invitations and first-run experience."
    ),
    _ProjectSpec("ANLY", "Analytics Pipeline", "software", False, "en", 1, ""),
    _ProjectSpec("DX", "Developer Experience", "software", True, "en", None, "Build tooling and CI.", None, 0.6),
    _ProjectSpec(
        "SOPES",
        "Soporte Técnico España",
        "service_desk",
        False,
        "es",
        2,
        "Atención al cliente para España y Latinoamérica.",
    ),
    _ProjectSpec("QS", "Qualitätssicherung", "software", False, "de", 0, "Testautomatisierung und Abnahme."),
    _ProjectSpec("EPM", "Équipe Produit Montréal", "software", True, "fr", 0, "Équipe produit basée à Montréal."),
    _ProjectSpec("TOOLS", "Internal Tools ", "software", False, "en", 1, "", None, 0.5),
    _ProjectSpec(
        "LEGAL",
        "Legal & Compliance",
        "business",
        False,
        "en",
        4,
        "Contracts, GDPR requests and policy reviews.",
        None,
        0.6,
    ),
    _ProjectSpec("GDPR", "Data Privacy (GDPR)", "business", True, "en", 4, "Data subject requests."),
    _ProjectSpec("CHK", "Checkout Experience", "software", False, "en", 0, "Cart, coupons and checkout."),
    _ProjectSpec("APIGW", "API Gateway", "software", False, "en", 1, "Rate limiting and routing."),
    _ProjectSpec(
        "A11Y", "Accessibility Guild", "software", True, "en", None, "Accessibility audits and fixes.", None, 0.6
    ),
    _ProjectSpec("RELMGMT", "Release Management", "software", False, "en", 1, "", None, 0.0),
    _ProjectSpec("KB", "Knowledge Base", "service_desk", False, "en", None, "", None, 0.0),
)

# Global (company-managed) issue types: (id, name, description, avatarId, level)
_GLOBAL_TYPES: tuple[tuple[str, str, str, int, int], ...] = (
    (
        "10000",
        "Epic",
        "A big user story that needs to be broken down. Created by Jira Software - do not edit or delete.",
        10307,
        1,
    ),
    ("10001", "Story", "Functionality or a feature expressed as a user goal.", 10315, 0),
    ("10002", "Task", "A small, distinct piece of work.", 10318, 0),
    ("10003", "Bug", "A problem or error.", 10303, 0),
    ("10004", "Sub-task", "A small piece of work that's part of a larger task.", 10316, -1),
    (
        "10005",
        "[System] Service request",
        "Created by Jira Service Management configuration for the service request issue type.",
        10320,
        0,
    ),
    ("10006", "[System] Incident", "For system outages or incidents. Created by Jira Service Management.", 10322, 0),
)

_PRIORITIES: tuple[tuple[str, str, str], ...] = (
    ("1", "Highest", "highest.svg"),
    ("2", "High", "high.svg"),
    ("3", "Medium", "medium.svg"),
    ("4", "Low", "low.svg"),
    ("5", "Lowest", "lowest.svg"),
)

_RESOLUTIONS: dict[str, tuple[str, str]] = {
    "done": ("10000", "Work has been completed on this issue."),
    "won't do": ("10001", "This issue won't be actioned."),
    "duplicate": ("10002", "The problem is a duplicate of an existing issue."),
    "cannot reproduce": ("10003", "All attempts at reproducing this issue failed."),
}
_RESOLUTION_NAMES = {
    "done": "Done",
    "won't do": "Won't Do",
    "duplicate": "Duplicate",
    "cannot reproduce": "Cannot Reproduce",
}

_CATEGORY_OBJ = {
    "new": (2, "blue-gray", "To Do"),
    "indeterminate": (4, "yellow", "In Progress"),
    "done": (3, "green", "Done"),
}

# Global statuses: (id, name, category key, description, icon file or "")
_GLOBAL_STATUSES: tuple[tuple[str, str, str, str, str], ...] = (
    ("10000", "To Do", "new", "", ""),
    ("10002", "Backlog", "new", "Work that is not planned yet.", ""),
    ("10003", "Selected for Development", "new", "", ""),
    (
        "3",
        "In Progress",
        "indeterminate",
        "This issue is being actively worked on at the moment by the assignee.",
        "inprogress.png",
    ),
    ("10004", "In Review", "indeterminate", "Waiting for code review.", ""),
    ("10005", "Blocked", "indeterminate", "Work cannot continue for now.", ""),
    ("10009", "Waiting for Customer", "indeterminate", "Waiting for a reply from the customer.", ""),
    ("10001", "Done", "done", "", ""),
    ("10006", "Won't Do", "done", "The issue will not be worked on.", ""),
    ("10007", "Erledigt", "done", "Die Arbeit ist abgeschlossen.", ""),
    ("10008", "完了", "done", "作業が完了しました。", ""),
)

# Workflows for company-managed projects: status names with a relative weight.
_CLASSIC_WORKFLOWS: dict[str, tuple[tuple[str, float], ...]] = {
    "software": (
        ("To Do", 3),
        ("Backlog", 2),
        ("Selected for Development", 1),
        ("In Progress", 3),
        ("In Review", 1.5),
        ("Blocked", 0.7),
        ("Done", 5),
        ("Won't Do", 0.8),
    ),
    "business": (("To Do", 3), ("In Progress", 3), ("Done", 5)),
    "service_desk": (
        ("To Do", 3),
        ("In Progress", 2),
        ("Waiting for Customer", 1.5),
        ("Done", 5),
        ("Won't Do", 0.7),
    ),
}

_TEAM_STATUS_NAMES = {
    "en": (("To Do", "new"), ("In Progress", "indeterminate"), ("Done", "done")),
    "fr": (("À faire", "new"), ("En cours", "indeterminate"), ("Terminé", "done")),
}

_CUSTOMERS = (
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella Health",
    "Stark Logistics",
    "Müller & Söhne GmbH",
    "Société des Cafés Lyonnais",
    "Hanabi K.K.",
    "Nordwind AB",
    "Soylent Foods",
)
_VERSIONS = ("4.18", "4.19", "5.0", "5.1", "5.2", "2026.1", "2026.2")

_GENERIC: dict[str, tuple[str, ...]] = {
    "en": (
        "Reported by {customer} through the support portal.",
        "First noticed after the {version} release.",
        "Roughly {pct}% of active users are affected.",
        "No workaround is known yet.",
        "Priority was agreed with product management in the last planning meeting.",
        "This blocks the {customer} renewal, so please treat it as urgent.",
        "Seen in production and on staging.",
    ),
    "de": (
        "Gemeldet von {customer} über das Support-Portal.",
        "Zuerst nach dem Release {version} aufgefallen.",
        "Bisher ist kein Workaround bekannt.",
    ),
    "fr": (
        "Signalé par {customer} via le portail de support.",
        "Constaté pour la première fois après la version {version}.",
        "Aucun contournement connu pour l'instant.",
    ),
    "es": (
        "Reportado por {customer} a través del portal de soporte.",
        "Detectado por primera vez tras la versión {version}.",
        "Por ahora no se conoce ninguna solución alternativa.",
    ),
    "ja": (
        "{customer}からサポートポータル経由で報告されました。",
        "バージョン{version}のリリース後に初めて確認されました。",
        "現時点で回避策はありません。",
    ),
}

_HEADINGS: dict[str, tuple[str, str, str]] = {  # (details, environment, log)
    "en": ("Details", "Environment", "Log excerpt"),
    "de": ("Details", "Umgebung", "Protokollauszug"),
    "fr": ("Détails", "Environnement", "Extrait du journal"),
    "es": ("Detalles", "Entorno", "Extracto del registro"),
    "ja": ("詳細", "環境", "ログ抜粋"),
}

_STEPS_EN = (
    "Sign in as a regular user.",
    "Open the affected page or screen.",
    "Repeat the action described above.",
    "Compare the result with the expected behaviour.",
    "Check the browser console and the server logs.",
)

_EMOJI = (
    (":warning:", "26a0", "⚠️"),
    (":fire:", "1f525", "🔥"),
    (":bug:", "1f41b", "🐛"),
    (":eyes:", "1f440", "👀"),
    (":tada:", "1f389", "🎉"),
)

_INVESTIGATION_EN = (
    "We compared the behaviour on {host} with the previous release and the difference "
    "is reproducible in about {pct}% of attempts.",
    "The on-call engineer collected the logs below at {time} UTC while the problem was happening.",
    "Rolling back to {version} on a single node made the symptom disappear there, "
    "which confirms the regression window.",
    "Metrics from the load balancer show no increase in traffic during the period, so load is not the trigger.",
    "We added extra debug logging on {host} to capture the full request context.",
    "A customer call on {time} UTC confirmed the impact and the workaround was shared with them.",
    "The same pattern appears in the staging environment once the data volume is comparable to production.",
    "Nothing in the configuration repository changed during that week except the dependency upgrade.",
    "Several related tickets were linked from the support queue and closed as duplicates of this one.",
    "A follow-up review is scheduled with the owning team to agree on the long-term fix.",
)
_LONG_SECTIONS_EN = (
    "Timeline",
    "Impact",
    "Investigation notes",
    "Application log excerpt",
    "Stack trace",
    "Root cause analysis",
    "Follow-up actions",
)
_STACK_FRAMES = (
    'File "/srv/app/service/handlers.py", line {n}, in handle_request',
    'File "/srv/app/service/pipeline.py", line {n}, in run_step',
    'File "/srv/app/lib/retry.py", line {n}, in call_with_retry',
    "at com.example.core.Dispatcher.dispatch(Dispatcher.java:{n})",
    "at com.example.core.worker.JobRunner.execute(JobRunner.java:{n})",
    "at java.base/java.util.concurrent.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:{n})",
)
_HOSTS = ("app-eu-1", "app-eu-2", "app-us-1", "worker-3", "worker-7", "edge-fra-2")


# --------------------------------------------------------------------------------------
# ADF helpers
# --------------------------------------------------------------------------------------


def _text(value: str, marks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "text", "text": value}
    if marks:
        node["marks"] = marks
    return node


def _para(*inline: dict[str, Any]) -> dict[str, Any]:
    return {"type": "paragraph", "content": list(inline)}


def _heading(level: int, value: str) -> dict[str, Any]:
    return {"type": "heading", "attrs": {"level": level}, "content": [_text(value)]}


def _list(kind: str, items: Iterable[str]) -> dict[str, Any]:
    node: dict[str, Any] = {
        "type": kind,
        "content": [{"type": "listItem", "content": [_para(_text(i))]} for i in items],
    }
    if kind == "orderedList":
        node["attrs"] = {"order": 1}
    return node


def _code(language: str, value: str) -> dict[str, Any]:
    return {"type": "codeBlock", "attrs": {"language": language}, "content": [_text(value)]}


def _doc(content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "doc", "version": 1, "content": content}


def _adf_paragraphs(text: str) -> dict[str, Any]:
    """A plain string as an ADF doc, one paragraph per blank-line separated block."""
    blocks = [b.strip() for b in text.split("\n\n") if b.strip()]
    return _doc([_para(_text(b)) for b in blocks])


# --------------------------------------------------------------------------------------
# The site
# --------------------------------------------------------------------------------------


@dataclass
class JiraSite:
    """An in-memory Jira Cloud site; the handler serves its current state."""

    base_url: str
    projects: list[dict[str, Any]]
    issue_types: list[dict[str, Any]]
    statuses: list[dict[str, Any]]
    issues: list[dict[str, Any]]
    requests: list[tuple[str, str]] = field(default_factory=list)
    #: issue key -> topic id (private labels for retrieval tests; not in any field)
    topics: dict[str, str] = field(default_factory=dict)
    #: issue key -> language code of its summary and description ("en", "de", ...)
    languages: dict[str, str] = field(default_factory=dict)
    #: keys of the issues generated with a very long description (3,000-6,000 words)
    long_issue_keys: list[str] = field(default_factory=list)
    #: project id -> components ({"self","id","name"}) issues of that project may use
    components: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: users that appear as leads, assignees and reporters
    users: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    _next_issue_id: int = field(default=0, repr=False, compare=False)

    # ---- lookups -------------------------------------------------------------------

    def issue(self, key_or_id: str) -> dict[str, Any]:
        """The stored issue with this key (case-insensitive) or id; KeyError if none."""
        wanted = key_or_id.upper()
        for issue in self.issues:
            if issue["key"] == wanted or issue["id"] == key_or_id:
                return issue
        raise KeyError(key_or_id)

    def project(self, id_or_key: str) -> dict[str, Any]:
        """The stored project with this id or key (case-insensitive); KeyError if none."""
        wanted = id_or_key.upper()
        for project in self.projects:
            if project["id"] == id_or_key or project["key"] == wanted:
                return project
        raise KeyError(id_or_key)

    def latest_updated(self) -> datetime:
        """The most recent ``updated`` of any issue (``SITE_NOW`` for an empty site)."""
        if not self.issues:
            return SITE_NOW
        return max(parse_jira_timestamp(i["fields"]["updated"]) for i in self.issues)

    # ---- mutations -----------------------------------------------------------------

    def touch_issue(
        self,
        key: str,
        *,
        summary: str | None = None,
        description: str | dict[str, Any] | None = None,
        updated: datetime | str | None = None,
    ) -> dict[str, Any]:
        """Edit an issue and bump its ``updated``.

        ``description`` may be an ADF doc or a plain string (stored as ADF paragraphs).
        Without ``updated`` the new timestamp is one minute after the latest
        ``updated`` of any issue, so an incremental ``updated >=`` query finds it.
        """
        with self._lock:
            issue = self.issue(key)
            fields = issue["fields"]
            if summary is not None:
                fields["summary"] = summary
            if description is not None:
                fields["description"] = _adf_paragraphs(description) if isinstance(description, str) else description
            fields["updated"] = self._next_timestamp(updated)
            self._refresh_links()
            return issue

    def add_issue(
        self,
        project_key: str,
        *,
        summary: str,
        description: str | dict[str, Any] | None = None,
        issue_type: str = "Task",
        topic: str | None = None,
        created: datetime | str | None = None,
    ) -> dict[str, Any]:
        """Create an issue at the end of ``project_key`` (next id and key number)."""
        with self._lock:
            project = self.project(project_key)
            types = project.get("issueTypes") or []
            itype = next((t for t in types if t["name"].lower() == issue_type.lower()), None)
            if itype is None:
                itype = next(t for t in types if t["hierarchyLevel"] == 0)
            status = self._statuses_for(project)[0]
            stamp = self._next_timestamp(created)
            number = 1 + max(
                (int(i["key"].rsplit("-", 1)[1]) for i in self.issues if i["fields"]["project"]["id"] == project["id"]),
                default=0,
            )
            issue_id = str(self._next_issue_id)
            self._next_issue_id += 1
            key = f"{project['key']}-{number}"
            users = self.users or [_user_obj(self.base_url, 0, "Sample User", "UTC", True)]
            desc: dict[str, Any] | None
            if isinstance(description, str):
                desc = _adf_paragraphs(description)
            else:
                desc = description
            base = self.base_url
            fields = _base_fields(
                base,
                summary=summary,
                description=desc,
                itype=itype,
                status=status,
                project=project,
                priority=_PRIORITIES[2],
                reporter=users[0],
                assignee=None,
                created=stamp,
                updated=stamp,
                rank=f"0|i{int(issue_id):05x}:",
            )
            fields["watches"]["self"] = f"{base}/rest/api/3/issue/{key}/watchers"
            issue = {
                "id": issue_id,
                "key": key,
                "self": f"{self.base_url}/rest/api/3/issue/{issue_id}",
                "fields": fields,
            }
            self.issues.append(issue)
            self.languages[key] = "en"
            if topic is not None:
                self.topics[key] = topic
            return issue

    def delete_issue(self, key: str) -> list[str]:
        """Delete an issue and its sub-tasks (as Jira does); returns the deleted keys."""
        with self._lock:
            issue = self.issue(key)
            doomed = {issue["key"]}
            doomed.update(i["key"] for i in self.issues if (i["fields"].get("parent") or {}).get("id") == issue["id"])
            self.issues = [i for i in self.issues if i["key"] not in doomed]
            for k in doomed:
                self.topics.pop(k, None)
                self.languages.pop(k, None)
            self.long_issue_keys = [k for k in self.long_issue_keys if k not in doomed]
            self._refresh_links()
            return sorted(doomed)

    def delete_project(self, project_id: str) -> list[str]:
        """Delete a project (id or key), its issues and its team-managed (scoped) issue
        types and statuses; returns the deleted issue keys."""
        with self._lock:
            project = self.project(project_id)
            pid = project["id"]
            self.projects = [p for p in self.projects if p["id"] != pid]
            gone = [i["key"] for i in self.issues if i["fields"]["project"]["id"] == pid]
            gone_set = set(gone)
            self.issues = [i for i in self.issues if i["key"] not in gone_set]
            for k in gone:
                self.topics.pop(k, None)
                self.languages.pop(k, None)
            self.long_issue_keys = [k for k in self.long_issue_keys if k not in gone_set]
            self.issue_types = [t for t in self.issue_types if _scope_pid(t) != pid]
            self.statuses = [s for s in self.statuses if _scope_pid(s) != pid]
            self.components.pop(pid, None)
            self._refresh_links()
            return gone

    def rename_project(self, project_id: str, name: str) -> dict[str, Any]:
        """Rename a project; the embedded project in its issues follows, as in Jira."""
        with self._lock:
            project = self.project(project_id)
            project["name"] = name
            for issue in self.issues:
                if issue["fields"]["project"]["id"] == project["id"]:
                    issue["fields"]["project"]["name"] = name
            return project

    # ---- internals -----------------------------------------------------------------

    def _next_timestamp(self, value: datetime | str | None) -> str:
        if isinstance(value, str):
            parse_jira_timestamp(value)  # validate
            return value
        if isinstance(value, datetime):
            return format_jira_timestamp(value)
        return format_jira_timestamp(self.latest_updated() + timedelta(minutes=1))

    def _statuses_for(self, project: dict[str, Any]) -> list[dict[str, Any]]:
        scoped = [s for s in self.statuses if _scope_pid(s) == project["id"]]
        if scoped:
            return scoped
        return [s for s in self.statuses if "scope" not in s]

    def _refresh_links(self) -> None:
        """Recompute the denormalised ``parent`` and ``subtasks`` copies."""
        by_id = {i["id"]: i for i in self.issues}
        children: dict[str, list[dict[str, Any]]] = {}
        for issue in self.issues:
            parent = issue["fields"].get("parent")
            if parent is None:
                continue
            target = by_id.get(parent["id"])
            if target is None:  # the parent was deleted: Jira would have deleted it too
                issue["fields"].pop("parent", None)
                continue
            issue["fields"]["parent"] = _issue_link(self.base_url, target)
            if issue["fields"]["issuetype"].get("subtask"):
                children.setdefault(target["id"], []).append(issue)
        for issue in self.issues:
            kids = children.get(issue["id"], [])
            issue["fields"]["subtasks"] = [_issue_link(self.base_url, k) for k in kids]


def _scope_pid(obj: dict[str, Any]) -> str | None:
    scope = obj.get("scope")
    if not scope:
        return None
    return scope.get("project", {}).get("id")


def _issue_link(base: str, issue: dict[str, Any]) -> dict[str, Any]:
    """The compact issue copy Jira embeds as ``parent`` and in ``subtasks``."""
    fields = issue["fields"]
    return {
        "id": issue["id"],
        "key": issue["key"],
        "self": f"{base}/rest/api/3/issue/{issue['id']}",
        "fields": {
            "summary": fields["summary"],
            "status": fields["status"],
            "priority": fields["priority"],
            "issuetype": fields["issuetype"],
        },
    }


def _user_obj(base: str, n: int, name: str, tz: str, active: bool) -> dict[str, Any]:
    digest = hashlib.sha1(f"{n}:{name}".encode()).hexdigest()
    if n % 3 == 0:
        account_id = f"712020:{uuid.UUID(digest[:32])}"
    else:
        account_id = "5" + digest[:23]
    initials = "".join(part[0] for part in name.split()[:2]).upper() or "U"
    avatar = (
        f"https://avatar-management--avatars.us-west-2.prod.public.atl-paas.net/initials/{quote(initials)}-{n % 6}.png"
    )
    return {
        "self": f"{base}/rest/api/3/user?accountId={account_id}",
        "accountId": account_id,
        "avatarUrls": {size: avatar for size in ("48x48", "24x24", "16x16", "32x32")},
        "displayName": name,
        "active": active,
        "timeZone": tz,
        "accountType": "atlassian",
    }


def _lead(user: dict[str, Any]) -> dict[str, Any]:
    return {k: user[k] for k in ("self", "accountId", "avatarUrls", "displayName", "active")}


def _avatar_urls(base: str, kind: str, avatar_id: int) -> dict[str, str]:
    root = f"{base}/rest/api/3/universal_avatar/view/type/{kind}/avatar/{avatar_id}"
    return {
        "48x48": root,
        "24x24": f"{root}?size=small",
        "16x16": f"{root}?size=xsmall",
        "32x32": f"{root}?size=medium",
    }


def _status_category(base: str, key: str) -> dict[str, Any]:
    cid, color, name = _CATEGORY_OBJ[key]
    return {
        "self": f"{base}/rest/api/3/statuscategory/{cid}",
        "id": cid,
        "key": key,
        "colorName": color,
        "name": name,
    }


def _issue_status(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k not in ("scope", "untranslatedName")}


def _issue_type_ref(itype: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in itype.items() if k not in ("scope", "untranslatedName")}


def _priority_obj(base: str, prio: tuple[str, str, str]) -> dict[str, Any]:
    pid, name, icon = prio
    return {
        "self": f"{base}/rest/api/3/priority/{pid}",
        "iconUrl": f"{base}/images/icons/priorities/{icon}",
        "name": name,
        "id": pid,
    }


def _base_fields(
    base: str,
    *,
    summary: str,
    description: dict[str, Any] | None,
    itype: dict[str, Any],
    status: dict[str, Any],
    project: dict[str, Any],
    priority: tuple[str, str, str],
    reporter: dict[str, Any],
    assignee: dict[str, Any] | None,
    created: str,
    updated: str,
    rank: str,
) -> dict[str, Any]:
    return {
        "statuscategorychangedate": created,
        "issuetype": _issue_type_ref(itype),
        "project": {
            "self": project["self"],
            "id": project["id"],
            "key": project["key"],
            "name": project["name"],
            "projectTypeKey": project["projectTypeKey"],
            "simplified": project["simplified"],
            "avatarUrls": project["avatarUrls"],
        },
        "fixVersions": [],
        "resolution": None,
        "resolutiondate": None,
        "watches": {
            "self": "",
            "watchCount": 1,
            "isWatching": False,
        },
        "created": created,
        "priority": _priority_obj(base, priority),
        "labels": [],
        "versions": [],
        "issuelinks": [],
        "assignee": assignee,
        "updated": updated,
        "status": _issue_status(status),
        "components": [],
        "description": description,
        "summary": summary,
        "creator": reporter,
        "subtasks": [],
        "reporter": reporter,
        "duedate": None,
        "environment": None,
        "customfield_10019": rank,
        "customfield_10020": None,
    }


# --------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------


class _Gen:
    """One generation run; all randomness comes from ``self.rng``."""

    def __init__(self, seed: int, base_url: str, id_offset: int) -> None:
        self.rng = random.Random(seed)
        self.base = base_url.rstrip("/")
        self.id_offset = id_offset

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    # ---- furniture -----------------------------------------------------------------

    def users(self) -> list[dict[str, Any]]:
        return [_user_obj(self.base, n, name, tz, active) for n, (name, tz, active) in enumerate(_USERS)]

    def global_issue_types(self) -> list[dict[str, Any]]:
        out = []
        for tid, name, desc, avatar, level in _GLOBAL_TYPES:
            obj: dict[str, Any] = {
                "self": f"{self.base}/rest/api/3/issuetype/{tid}",
                "id": tid,
                "description": desc,
                "iconUrl": (f"{self.base}/rest/api/2/universal_avatar/view/type/issuetype/avatar/{avatar}?size=medium"),
                "name": name,
                "subtask": level == -1,
                "avatarId": avatar,
                "hierarchyLevel": level,
            }
            if not name.startswith("["):
                obj["untranslatedName"] = name
            out.append(obj)
        return out

    def global_statuses(self) -> list[dict[str, Any]]:
        out = []
        for sid, name, cat, desc, icon in _GLOBAL_STATUSES:
            obj: dict[str, Any] = {
                "self": f"{self.base}/rest/api/3/status/{sid}",
                "description": desc,
                "iconUrl": (f"{self.base}/images/icons/statuses/{icon}" if icon else f"{self.base}/"),
                "name": name,
                "untranslatedName": name,
                "id": sid,
                "statusCategory": _status_category(self.base, cat),
            }
            if sid in ("10005", "10009"):  # untranslatedName only on some, as on Cloud
                del obj["untranslatedName"]
            out.append(obj)
        return out

    def project(
        self,
        index: int,
        spec: _ProjectSpec,
        lead: dict[str, Any],
        issue_types: list[dict[str, Any]],
    ) -> dict[str, Any]:
        pid = str(10000 + self.id_offset + index)
        obj: dict[str, Any] = {
            "expand": "description,lead,issueTypes,url,projectKeys,permissions,insight",
            "self": f"{self.base}/rest/api/3/project/{pid}",
            "id": pid,
            "key": spec.key,
            "description": spec.description,
            "lead": _lead(lead),
            "issueTypes": issue_types,
            "name": spec.name,
            "avatarUrls": _avatar_urls(self.base, "project", 10400 + index),
            "projectTypeKey": spec.type_key,
            "simplified": spec.team_managed,
            "style": "next-gen" if spec.team_managed else "classic",
            "isPrivate": False,
            "properties": {},
        }
        if spec.url:
            obj["url"] = spec.url
        if spec.category is not None:
            cid, cname, cdesc = _CATEGORIES[spec.category]
            obj["projectCategory"] = {
                "self": f"{self.base}/rest/api/3/projectCategory/{cid}",
                "id": cid,
                "name": cname,
                "description": cdesc,
            }
        return obj

    def team_types(self, pid: str, spec: _ProjectSpec, next_id: int) -> list[dict]:
        names: list[tuple[str, str, int, int]] = [
            ("Epic", "Epics track collections of related bugs, stories, and tasks.", 10307, 1),
            ("Tâche" if spec.lang == "fr" else "Task", "Tasks track small, distinct pieces of work.", 10318, 0),
            ("Bug", "Bugs track problems or errors.", 10303, 0),
        ]
        if spec.type_key == "software":
            names.append(("Story", "Stories track functionality or features expressed as user goals.", 10315, 0))
        names.append(("Subtask", "Subtasks track small pieces of work that are part of a larger task.", 10316, -1))
        out = []
        for offset, (name, desc, avatar, level) in enumerate(names):
            tid = str(next_id + offset)
            out.append(
                {
                    "self": f"{self.base}/rest/api/3/issuetype/{tid}",
                    "id": tid,
                    "description": desc,
                    "iconUrl": (
                        f"{self.base}/rest/api/2/universal_avatar/view/type/issuetype/avatar/{avatar}?size=medium"
                    ),
                    "name": name,
                    "subtask": level == -1,
                    "avatarId": avatar,
                    "entityId": self.uuid(),
                    "hierarchyLevel": level,
                    "scope": {"type": "PROJECT", "project": {"id": pid}},
                }
            )
        return out

    def team_statuses(self, pid: str, spec: _ProjectSpec, next_id: int) -> list[dict[str, Any]]:
        names = list(_TEAM_STATUS_NAMES["fr" if spec.lang == "fr" else "en"])
        if spec.type_key == "software":
            names.insert(2, ("In Review", "indeterminate"))
        out = []
        for offset, (name, cat) in enumerate(names):
            sid = str(next_id + offset)
            out.append(
                {
                    "self": f"{self.base}/rest/api/3/status/{sid}",
                    "description": "",
                    "iconUrl": f"{self.base}/",
                    "name": name,
                    "id": sid,
                    "statusCategory": _status_category(self.base, cat),
                    "scope": {"type": "PROJECT", "project": {"id": pid}},
                }
            )
        return out

    # ---- text ----------------------------------------------------------------------

    def fill(self, template: str) -> str:
        return template.format(
            customer=self.rng.choice(_CUSTOMERS),
            version=self.rng.choice(_VERSIONS),
            pct=self.rng.choice((2, 5, 8, 12, 20, 35)),
            host=self.rng.choice(_HOSTS),
            time=f"{self.rng.randint(0, 23):02d}:{self.rng.randint(0, 59):02d}",
        )

    def log_lines(self, topic: _Topic, count: int, day: datetime) -> list[str]:
        pool = list(topic.logs) or [
            "INFO  app.Request - GET /api/v2/items 200 {n}ms",
        ]
        generic = (
            "INFO  app.Request - {method} /api/v2/{res} {status} {ms}ms req={req}",
            "DEBUG app.Cache - miss key={res}:{n} ttl=300",
            "INFO  app.Worker - job {n} finished in {ms}ms queue=default",
        )
        lines = []
        stamp = day.replace(hour=self.rng.randint(0, 22), minute=0, second=0)
        for i in range(count):
            stamp += timedelta(milliseconds=self.rng.randint(20, 9000))
            if i % 3 == 0 or self.rng.random() < 0.3:
                body = self.rng.choice(pool)
            else:
                body = self.rng.choice(generic)
            body = (
                body.replace("{n}", str(self.rng.randint(1000, 99999)))
                .replace("{method}", self.rng.choice(("GET", "POST", "PUT")))
                .replace("{res}", self.rng.choice(("orders", "users", "reports")))
                .replace("{status}", self.rng.choice(("200", "200", "201", "500")))
                .replace("{ms}", str(self.rng.randint(3, 4000)))
                .replace("{req}", self.uuid()[:8])
            )
            lines.append(f"{stamp:%Y-%m-%d %H:%M:%S},{stamp.microsecond // 1000:03d} {body}")
        return lines

    def description(
        self,
        topic: _Topic,
        lang: str,
        users: list[dict[str, Any]],
        created: datetime,
        related_urls: list[str],
    ) -> dict[str, Any]:
        rng = self.rng
        sentences = list(topic.texts.get(lang, topic.texts["en"])[1])
        rng.shuffle(sentences)
        generic = _GENERIC[lang]
        heads = _HEADINGS[lang]
        content: list[dict[str, Any]] = []

        first: list[dict[str, Any]] = []
        if rng.random() < 0.15:
            user = rng.choice(users)
            first += [
                {
                    "type": "mention",
                    "attrs": {
                        "id": user["accountId"],
                        "text": "@" + user["displayName"],
                        "accessLevel": "",
                    },
                },
                _text(" "),
            ]
        take = rng.randint(1, 2)
        first.append(_text(" ".join(sentences[:take])))
        if rng.random() < 0.1:
            short, code, char = rng.choice(_EMOJI)
            first += [
                _text(" "),
                {"type": "emoji", "attrs": {"shortName": short, "id": code, "text": char}},
            ]
        content.append(_para(*first))
        rest = sentences[take:]

        second = " ".join(rest[: rng.randint(1, 2)])
        if rng.random() < 0.6:
            second = (second + " " + self.fill(rng.choice(generic))).strip()
        inline: list[dict[str, Any]] = [_text(second)] if second else []
        roll = rng.random()
        if roll < 0.1 and related_urls:
            inline += [_text(" "), {"type": "inlineCard", "attrs": {"url": rng.choice(related_urls)}}]
        elif roll < 0.2:
            inline += [
                _text(" "),
                _text("Runbook", [{"type": "link", "attrs": {"href": "https://wiki.example.com/runbooks"}}]),
            ]
        if inline:
            content.append(_para(*inline))

        if lang == "en" and rng.random() < 0.15:
            content.append(_heading(3, "Steps to reproduce"))
            content.append(_list("orderedList", rng.sample(_STEPS_EN, rng.randint(2, 4))))
        if len(rest) > 2 and rng.random() < 0.3:
            content.append(_heading(2, heads[0]))
            content.append(_list("bulletList", rest[2:]))
        if topic.logs and rng.random() < 0.3:
            content.append(_heading(3, heads[2]))
            lines = self.log_lines(topic, rng.randint(2, 6), created)
            content.append(_code("text", "\n".join(lines)))
        if rng.random() < 0.08:
            content.append(_heading(3, heads[1]))
            content.append(self.table())
        roll = rng.random()
        if roll < 0.05:
            due = created + timedelta(days=rng.randint(7, 40))
            day = due.replace(hour=0, minute=0, second=0, microsecond=0)
            content.append(
                _para(
                    _text("Target date: " if lang == "en" else "→ "),
                    {"type": "date", "attrs": {"timestamp": str(int(day.timestamp() * 1000))}},
                )
            )
        elif roll < 0.1:
            text, color = rng.choice((("BLOCKED", "red"), ("IN QA", "blue"), ("NEEDS INFO", "yellow")))
            content.append(
                _para(
                    _text("State: " if lang == "en" else "→ "),
                    {"type": "status", "attrs": {"text": text, "color": color, "localId": self.uuid(), "style": ""}},
                )
            )
        elif roll < 0.14:
            content.append(
                {
                    "type": "panel",
                    "attrs": {"panelType": "info"},
                    "content": [_para(_text(self.fill(rng.choice(generic))))],
                }
            )
        return _doc(content)

    def table(self) -> dict[str, Any]:
        rng = self.rng
        rows = [
            ("Component", "Value"),
            ("Browser", rng.choice(("Chrome 131", "Firefox 134", "Safari 18.2", "Edge 131"))),
            ("OS", rng.choice(("macOS 15.2", "Windows 11", "Ubuntu 24.04", "iOS 18.1", "Android 14"))),
            ("App version", rng.choice(_VERSIONS)),
        ]

        def cell(kind: str, value: str) -> dict[str, Any]:
            return {"type": kind, "attrs": {}, "content": [_para(_text(value))]}

        return {
            "type": "table",
            "attrs": {"isNumberColumnEnabled": False, "layout": "default", "localId": self.uuid()},
            "content": [
                {
                    "type": "tableRow",
                    "content": [cell("tableHeader" if r == 0 else "tableCell", v) for v in row],
                }
                for r, row in enumerate(rows)
            ],
        }

    def long_description(self, topic: _Topic, users: list[dict[str, Any]], created: datetime) -> dict[str, Any]:
        rng = self.rng
        target = rng.randint(3200, 4900)
        words = 0
        sentences = topic.texts["en"][1]
        content: list[dict[str, Any]] = []

        def add(node: dict[str, Any], text: str) -> None:
            nonlocal words
            content.append(node)
            words += len(text.split())

        intro = " ".join(sentences[:3])
        add(_para(_text(intro)), intro)
        section = 0
        while words < target:
            name = _LONG_SECTIONS_EN[section % len(_LONG_SECTIONS_EN)]
            round_no = section // len(_LONG_SECTIONS_EN) + 1
            title = name if round_no == 1 else f"{name} ({round_no})"
            add(_heading(2, title), title)
            if name in ("Impact", "Investigation notes", "Root cause analysis"):
                for _ in range(rng.randint(2, 4)):
                    parts = [rng.choice(sentences)]
                    parts += [self.fill(rng.choice(_INVESTIGATION_EN)) for _ in range(3)]
                    parts.append(rng.choice(sentences))
                    text = " ".join(parts)
                    add(_para(_text(text)), text)
            elif name == "Timeline":
                stamp = created
                items = []
                for _ in range(rng.randint(5, 9)):
                    stamp += timedelta(minutes=rng.randint(3, 90))
                    items.append(f"{stamp:%Y-%m-%d %H:%M} UTC – {self.fill(rng.choice(_INVESTIGATION_EN))}")
                add(_list("bulletList", items), " ".join(items))
            elif name == "Application log excerpt":
                lines = self.log_lines(topic, rng.randint(50, 90), created)
                text = "\n".join(lines)
                add(_code("text", text), text)
            elif name == "Stack trace":
                frames = ["Traceback (most recent call last):"]
                for _ in range(rng.randint(15, 30)):
                    frame = rng.choice(_STACK_FRAMES).replace("{n}", str(rng.randint(10, 2400)))
                    frames.append("  " + frame)
                frames.append(rng.choice(topic.logs) if topic.logs else "RuntimeError: unexpected state")
                text = "\n".join(frames)
                add(_code("java" if "at " in text else "python", text), text)
            else:  # follow-up actions
                items = [self.fill(rng.choice(_INVESTIGATION_EN)) for _ in range(4)]
                items.append(rng.choice(sentences))
                add(_list("orderedList", items), " ".join(items))
            section += 1
        user = rng.choice(users)
        content.append(
            _para(
                {
                    "type": "mention",
                    "attrs": {"id": user["accountId"], "text": "@" + user["displayName"], "accessLevel": ""},
                },
                _text(" please review the follow-up actions."),
            )
        )
        return _doc(content)


@dataclass
class _Draft:
    topic: _Topic
    lang: str
    spec_index: int
    created: datetime
    updated: datetime


def generate_sample_site(
    *,
    seed: int = 7,
    n_projects: int = 36,
    n_issues: int = 300,
    base_url: str = "https://sample.atlassian.net",
    id_offset: int = 0,
) -> JiraSite:
    """Build a deterministic sample site (same arguments -> equal site).

    ``id_offset`` shifts project and issue ids (projects ``10000 + id_offset + i``,
    issues ``10000 + id_offset + i``) so that two sites can have disjoint ids.
    """
    if n_projects < 0 or n_issues < 0:
        raise ValueError("n_projects and n_issues must be >= 0")
    if n_issues and not n_projects:
        raise ValueError("issues need at least one project")
    gen = _Gen(seed, base_url, id_offset)
    rng = gen.rng
    base = gen.base
    users = gen.users()

    specs = list(_PROJECTS[:n_projects])
    for extra in range(len(specs), n_projects):
        specs.append(
            _ProjectSpec(
                f"SBX{extra + 1}",
                f"Sandbox {extra + 1}",
                "software",
                False,
                "en",
                None if extra % 4 == 0 else 0,
                "Sandbox project for experiments.",
            )
        )

    issue_types = gen.global_issue_types()
    statuses = gen.global_statuses()
    types_by_name = {t["name"]: t for t in issue_types}
    projects: list[dict[str, Any]] = []
    project_types: list[list[dict[str, Any]]] = []
    project_statuses: list[list[tuple[dict[str, Any], float]]] = []
    components: dict[str, list[dict[str, Any]]] = {}
    status_by_name = {s["name"]: s for s in statuses}
    next_type_id, next_status_id, next_component = 10100, 10100, 10000
    component_pool = (
        "API",
        "Backend",
        "Frontend",
        "Mobile",
        "Database",
        "Billing",
        "Auth",
        "Search",
        "Infrastructure",
        "Docs",
        "Benachrichtigungen",
        "Facturation",
        "決済",
    )
    for index, spec in enumerate(specs):
        pid = str(10000 + id_offset + index)
        if spec.team_managed:
            ptypes = gen.team_types(pid, spec, next_type_id)
            next_type_id += len(ptypes)
            pstatuses = gen.team_statuses(pid, spec, next_status_id)
            next_status_id += len(pstatuses)
            issue_types += ptypes
            statuses += pstatuses
            weights = {"new": 3.0, "indeterminate": 3.0, "done": 5.0}
            workflow = [(s, weights[s["statusCategory"]["key"]]) for s in pstatuses]
        else:
            if spec.type_key == "software":
                names = ["Epic", "Story", "Task", "Bug", "Sub-task"]
            elif spec.type_key == "business":
                names = ["Epic", "Task", "Sub-task"]
            else:
                names = ["[System] Service request", "[System] Incident", "Task", "Sub-task"]
            ptypes = [types_by_name[n] for n in names]
            done_name = {"de": "Erledigt", "ja": "完了"}.get(spec.lang, "Done")
            workflow = [
                (status_by_name[done_name if n == "Done" else n], w) for n, w in _CLASSIC_WORKFLOWS[spec.type_key]
            ]
        lead = users[rng.randrange(len(users))]
        projects.append(gen.project(index, spec, lead, [dict(t) for t in ptypes]))
        project_types.append(ptypes)
        project_statuses.append(workflow)
        comps = []
        for name in rng.sample(component_pool, rng.randint(0, 4)):
            comps.append(
                {"self": f"{base}/rest/api/3/component/{next_component}", "id": str(next_component), "name": name}
            )
            next_component += 1
        components[pid] = comps

    # ---- issue drafts: topic, language, project, dates ---------------------------------
    order = list(_TOPICS)
    rng.shuffle(order)
    by_lang: dict[str, list[int]] = {}
    for index, spec in enumerate(specs):
        if spec.weight > 0:
            by_lang.setdefault(spec.lang, []).append(index)
    any_project = [i for i, s in enumerate(specs) if s.weight > 0] or list(range(len(specs)))
    en_weights = [(s.weight if s.lang == "en" else s.weight * 0.25) for s in specs]
    if not any(en_weights):
        en_weights = [1.0] * len(specs)
    span = (_CREATED_TO - _CREATED_FROM).total_seconds()
    drafts: list[_Draft] = []
    for n in range(n_issues):
        topic = order[n % len(order)]
        langs = [lang for lang in topic.texts if lang != "en"]
        lang = "en"
        if langs and rng.random() < 0.35:
            lang = rng.choice(langs)
        if lang != "en" and by_lang.get(lang):
            spec_index = rng.choice(by_lang[lang])
        elif lang != "en":
            spec_index = rng.choice(any_project)
        else:
            spec_index = rng.choices(range(len(specs)), weights=en_weights)[0]
        created = _CREATED_FROM + timedelta(seconds=rng.random() * span)
        age = (SITE_NOW - created).total_seconds()
        bump = min(age * rng.random() ** 2, rng.expovariate(1 / (30 * 86400)))
        updated = created + timedelta(seconds=bump)
        if rng.random() < 0.15:  # never edited after creation
            updated = created
        drafts.append(_Draft(topic, lang, spec_index, created, updated))
    drafts.sort(key=lambda d: d.created)

    # ---- issues ------------------------------------------------------------------------
    issues: list[dict[str, Any]] = []
    topics: dict[str, str] = {}
    languages: dict[str, str] = {}
    counters = [0] * len(specs)
    earlier: list[list[dict[str, Any]]] = [[] for _ in specs]
    long_budget = 6 if n_issues >= 30 else min(n_issues, 1 if n_issues >= 5 else 0)
    long_topics: set[str] = set()
    long_keys: list[str] = []
    for n, draft in enumerate(drafts):
        spec = specs[draft.spec_index]
        project = projects[draft.spec_index]
        ptypes = project_types[draft.spec_index]
        counters[draft.spec_index] += 1
        issue_id = str(10000 + id_offset + n)
        key = f"{spec.key}-{counters[draft.spec_index]}"

        parents = [i for i in earlier[draft.spec_index] if i["fields"]["issuetype"]["hierarchyLevel"] == 0]
        epics = [i for i in earlier[draft.spec_index] if i["fields"]["issuetype"]["hierarchyLevel"] == 1]
        roll = rng.random()
        parent: dict[str, Any] | None = None
        subtask_type = next(t for t in ptypes if t["hierarchyLevel"] == -1)
        if parents and roll < 0.12:
            itype = subtask_type
            parent = rng.choice(parents)
        elif roll < 0.17 and any(t["hierarchyLevel"] == 1 for t in ptypes):
            itype = next(t for t in ptypes if t["hierarchyLevel"] == 1)
        else:
            std = [t for t in ptypes if t["hierarchyLevel"] == 0]
            weights = [2.5 if t["name"] == "Bug" else 1.0 for t in std]
            itype = rng.choices(std, weights=weights)[0]
            if epics and rng.random() < 0.3:
                parent = rng.choice(epics)

        status_objs, status_weights = zip(*project_statuses[draft.spec_index], strict=True)
        status = rng.choices(status_objs, weights=status_weights)[0]
        category = status["statusCategory"]["key"]
        reporter = rng.choice(users[:-1])
        assignee = None if rng.random() < 0.2 else rng.choice(users)

        is_long = (
            len(long_keys) < long_budget
            and draft.lang == "en"
            and itype["hierarchyLevel"] == 0
            and draft.topic.id not in long_topics
            and n % 7 == 3
        )
        summaries = draft.topic.texts.get(draft.lang, draft.topic.texts["en"])[0]
        summary = rng.choice(summaries)
        if itype["hierarchyLevel"] == -1 and rng.random() < 0.5:
            summary = rng.choice(("Investigate: ", "Fix: ", "Add test: ")) + summary
        related = [f"{base}/browse/{i['key']}" for i in earlier[draft.spec_index][-5:]]
        if is_long:
            description: dict[str, Any] | None = gen.long_description(draft.topic, users, draft.created)
            long_topics.add(draft.topic.id)
            long_keys.append(key)
        elif rng.random() < 0.03:
            description = None
        else:
            description = gen.description(draft.topic, draft.lang, users, draft.created, related)

        created_s = format_jira_timestamp(draft.created)
        updated_s = format_jira_timestamp(draft.updated)
        fields = _base_fields(
            base,
            summary=summary,
            description=description,
            itype=itype,
            status=status,
            project=project,
            priority=_PRIORITIES[min(4, max(0, int(rng.gauss(2, 1))))],
            reporter=reporter,
            assignee=assignee,
            created=created_s,
            updated=updated_s,
            rank=f"0|i{n:05x}:",
        )
        fields["watches"]["self"] = f"{base}/rest/api/3/issue/{key}/watchers"
        fields["watches"]["watchCount"] = rng.randint(0, 4)
        if category != "new":
            change = draft.created + (draft.updated - draft.created) * rng.random()
            fields["statuscategorychangedate"] = format_jira_timestamp(change)
        if category == "done":
            name = status["name"].lower()
            res = "won't do" if name == "won't do" else "done"
            if res == "done" and itype["name"] == "Bug" and rng.random() < 0.2:
                res = rng.choice(("duplicate", "cannot reproduce"))
            rid, rdesc = _RESOLUTIONS[res]
            fields["resolution"] = {
                "self": f"{base}/rest/api/3/resolution/{rid}",
                "id": rid,
                "description": rdesc,
                "name": _RESOLUTION_NAMES[res],
            }
            fields["resolutiondate"] = fields["statuscategorychangedate"]
        labels = set(rng.sample(draft.topic.labels, rng.randint(0, len(draft.topic.labels))))
        if rng.random() < 0.25:
            labels.add(rng.choice(("customer-reported", "regression", "tech-debt", "needs-triage", "hotfix")))
        if draft.lang == "de" and rng.random() < 0.3:
            labels.add("dringend")
        fields["labels"] = sorted(labels)
        comps = components[project["id"]]
        if comps:
            picked = rng.sample(comps, rng.randint(0, min(2, len(comps))))
            fields["components"] = [dict(c) for c in sorted(picked, key=lambda c: c["id"])]
        if rng.random() < 0.1:
            fields["duedate"] = f"{draft.created + timedelta(days=rng.randint(5, 60)):%Y-%m-%d}"
        if parent is not None:
            fields["parent"] = {"id": parent["id"]}  # expanded by _refresh_links

        issue = {
            "id": issue_id,
            "key": key,
            "self": f"{base}/rest/api/3/issue/{issue_id}",
            "fields": fields,
        }
        issues.append(issue)
        earlier[draft.spec_index].append(issue)
        topics[key] = draft.topic.id
        languages[key] = draft.lang

    site = JiraSite(
        base_url=base,
        projects=projects,
        issue_types=issue_types,
        statuses=statuses,
        issues=issues,
        topics=topics,
        languages=languages,
        long_issue_keys=long_keys,
        components=components,
        users=users,
    )
    site._next_issue_id = 10000 + id_offset + n_issues
    site._refresh_links()
    return site


def labelled_queries(site: JiraSite) -> list[tuple[str, list[str]]]:
    """Natural-language queries, each with the keys of the issues on its topic.

    Relevant keys cover every language the topic's issues were written in; queries
    whose topic has no issue left in ``site`` are omitted.
    """
    by_topic: dict[str, list[str]] = {}
    for issue in site.issues:
        topic = site.topics.get(issue["key"])
        if topic is not None:
            by_topic.setdefault(topic, []).append(issue["key"])
    out = []
    for query, topic in _QUERY_TOPICS:
        keys = by_topic.get(topic)
        if keys:
            out.append((query, sorted(keys, key=_key_sort)))
    return out


def _key_sort(key: str) -> tuple[str, int]:
    project, _, number = key.rpartition("-")
    return project, int(number) if number.isdigit() else 0


@cache
def _default_queries() -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((q, tuple(k)) for q, k in labelled_queries(generate_sample_site()))


def __getattr__(name: str) -> Any:
    # SAMPLE_QUERIES is computed on first access, for the default site only.
    if name == "SAMPLE_QUERIES":
        return [(q, list(keys)) for q, keys in _default_queries()]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------
# JQL subset
# --------------------------------------------------------------------------------------


class JqlError(ValueError):
    """A JQL problem, reported to the client as a 400 with this message."""


_JQL_PREFIX = "Error in the JQL Query: "
_OPERATORS_HINT = (
    "The valid operators are '=', '!=', '<', '>', '<=', '>=', '~', '!~', 'IN', 'NOT IN', 'IS' and 'IS NOT'."
)
_RESERVED = {"and", "or", "not", "order", "by", "in", "is", "empty", "null"}
_KNOWN_UNSUPPORTED = {
    "assignee",
    "reporter",
    "creator",
    "summary",
    "description",
    "text",
    "labels",
    "label",
    "priority",
    "resolution",
    "resolved",
    "component",
    "components",
    "sprint",
    "fixversion",
    "affectedversion",
    "duedate",
    "due",
    "parent",
    "comment",
    "watcher",
    "votes",
    "environment",
    "statuscategorychangeddate",
    "filter",
    "issuefunction",
    "lastviewed",
    "resolutiondate",
}
_DATE_FIELDS = {
    "updated": "updated",
    "updateddate": "updated",
    "created": "created",
    "createddate": "created",
}
_NEVER_EMPTY = {
    "project",
    "key",
    "issuekey",
    "id",
    "issuetype",
    "type",
    "status",
    "statuscategory",
    "priority",
    "reporter",
    "creator",
    "summary",
}
_MAYBE_EMPTY = {
    "assignee": "assignee",
    "resolution": "resolution",
    "parent": "parent",
    "duedate": "duedate",
    "due": "duedate",
    "description": "description",
    "resolutiondate": "resolutiondate",
    "resolved": "resolutiondate",
    "labels": "labels",
    "component": "components",
    "components": "components",
    "environment": "environment",
}
_SORTABLE = {"updated", "updateddate", "created", "createddate", "key", "issuekey", "id", "project"}
_TOKEN_RE = re.compile(
    r"""\s*(?:
      (?P<op>!=|>=|<=|!~|=|>|<|~)
    | (?P<lpar>\()
    | (?P<rpar>\))
    | (?P<comma>,)
    | (?P<quote>["'])
    | (?P<word>[^\s=!<>~(),"']+)
    )""",
    re.VERBOSE,
)
_RELATIVE_RE = re.compile(r"^([-+]?)((?:\d+[wdhm]\s*)+)$")
_REL_PART_RE = re.compile(r"(\d+)([wdhm])")
_DATE_FORMATS = ("%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M", "%Y-%m-%d", "%Y/%m/%d")
_ISSUE_KEY_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)-(\d+)$")


@dataclass(frozen=True)
class _Tok:
    kind: str  # op | lpar | rpar | comma | str | word | eof
    value: str
    pos: int  # 1-based character position


def _tokenize(jql: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    i = 0
    while i < len(jql):
        match = _TOKEN_RE.match(jql, i)
        if match is None or match.end() == i:
            rest = jql[i:]
            if not rest.strip():
                break
            pos = i + len(rest) - len(rest.lstrip())
            char = jql[pos]
            raise JqlError(
                f"{_JQL_PREFIX}The character '{char}' is a reserved JQL character. You "
                f"must enclose it in a string or use the escape '\\u{ord(char):04x}' "
                f"instead. (line 1, character {pos + 1})"
            )
        start = match.start(match.lastgroup) if match.lastgroup else i
        kind = match.lastgroup
        if kind == "quote":
            quote_char = match.group("quote")
            j, buf = match.end(), []
            while j < len(jql) and jql[j] != quote_char:
                if jql[j] == "\\" and j + 1 < len(jql):
                    j += 1
                buf.append(jql[j])
                j += 1
            if j >= len(jql):
                raise JqlError(
                    f"{_JQL_PREFIX}The quoted string '{''.join(buf)}' has not been "
                    f"completed. (line 1, character {start + 1})"
                )
            tokens.append(_Tok("str", "".join(buf), start + 1))
            i = j + 1
            continue
        if kind is None:  # only whitespace left
            i = match.end()
            continue
        tokens.append(_Tok(kind, match.group(kind), start + 1))
        i = match.end()
    tokens.append(_Tok("eof", "", len(jql) + 1))
    return tokens


_Pred = Callable[[dict[str, Any]], bool]


@dataclass
class _Query:
    where: _Pred | None
    order: list[tuple[str, bool]]  # (field, descending)


class _Parser:
    def __init__(self, jql: str, site: JiraSite, now: datetime) -> None:
        self.tokens = _tokenize(jql)
        self.i = 0
        self.site = site
        self.now = now

    # ---- token helpers ---------------------------------------------------------------

    def peek(self) -> _Tok:
        return self.tokens[self.i]

    def take(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at_word(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind == "word" and tok.value.lower() in words

    @staticmethod
    def where(tok: _Tok) -> str:
        return f"(line 1, character {tok.pos})"

    # ---- grammar -------------------------------------------------------------------

    def parse(self) -> _Query:
        where = None
        if self.peek().kind != "eof" and not self.at_word("order"):
            where = self.parse_or()
        order: list[tuple[str, bool]] = []
        if self.at_word("order"):
            self.take()
            if not self.at_word("by"):
                tok = self.peek()
                got = f"'{tok.value}'" if tok.kind != "eof" else "the end of the query"
                raise JqlError(f"{_JQL_PREFIX}Expecting 'by' but got {got}. {self.where(tok)}")
            self.take()
            order = self.parse_order()
        tok = self.peek()
        if tok.kind != "eof":
            raise JqlError(f"{_JQL_PREFIX}Expecting either 'OR' or 'AND' but got '{tok.value}'. {self.where(tok)}")
        return _Query(where, order)

    def parse_or(self) -> _Pred:
        parts = [self.parse_and()]
        while self.at_word("or"):
            self.take()
            parts.append(self.parse_and())
        if len(parts) == 1:
            return parts[0]
        return lambda issue: any(p(issue) for p in parts)

    def parse_and(self) -> _Pred:
        parts = [self.parse_unary()]
        while self.at_word("and"):
            self.take()
            parts.append(self.parse_unary())
        if len(parts) == 1:
            return parts[0]
        return lambda issue: all(p(issue) for p in parts)

    def parse_unary(self) -> _Pred:
        if self.at_word("not"):
            self.take()
            inner = self.parse_unary()
            return lambda issue: not inner(issue)
        tok = self.peek()
        if tok.kind == "lpar":
            self.take()
            inner = self.parse_or()
            close = self.peek()
            if close.kind != "rpar":
                if close.kind == "eof":
                    raise JqlError(f"{_JQL_PREFIX}Expecting ')' before the end of the query.")
                raise JqlError(f"{_JQL_PREFIX}Expecting ')' but got '{close.value}'. {self.where(close)}")
            self.take()
            return inner
        return self.parse_clause()

    def parse_clause(self) -> _Pred:
        tok = self.take()
        if tok.kind == "eof":
            raise JqlError(f"{_JQL_PREFIX}Expecting a field name before the end of the query.")
        if tok.kind not in ("word", "str") or (tok.kind == "word" and tok.value.lower() in _RESERVED):
            raise JqlError(f"{_JQL_PREFIX}Expecting a field name but got '{tok.value}'. {self.where(tok)}")
        name = tok.value
        field_id = name.lower()
        op_tok = self.peek()
        if op_tok.kind == "op":
            self.take()
            op = op_tok.value
        elif self.at_word("in"):
            self.take()
            op = "in"
        elif self.at_word("not"):
            self.take()
            if not self.at_word("in"):
                nxt = self.peek()
                raise JqlError(f"{_JQL_PREFIX}Expecting 'IN' after 'NOT' but got '{nxt.value}'. {self.where(nxt)}")
            self.take()
            op = "not in"
        elif self.at_word("is"):
            self.take()
            negate = self.at_word("not")
            if negate:
                self.take()
            what = self.take()
            if what.kind != "word" or what.value.lower() not in ("empty", "null"):
                got = "the end of the query" if what.kind == "eof" else f"'{what.value}'"
                raise JqlError(f"{_JQL_PREFIX}Expecting 'EMPTY' or 'NULL' after 'IS' but got {got}.")
            return self.compile_empty(name, field_id, negate)
        elif self.at_word("was", "changed"):
            bad = self.take()
            raise JqlError(
                f"{_JQL_PREFIX}The operator '{bad.value.upper()}' is not supported by the "
                f"sample Jira site. {self.where(bad)}"
            )
        elif op_tok.kind == "eof":
            raise JqlError(f"{_JQL_PREFIX}Expecting operator before the end of the query. {_OPERATORS_HINT}")
        else:
            raise JqlError(
                f"{_JQL_PREFIX}Expecting operator but got '{op_tok.value}'. {_OPERATORS_HINT} {self.where(op_tok)}"
            )
        values = self.parse_values(op)
        self.check_field(name, field_id)
        return self.compile_clause(name, field_id, op, values)

    def parse_values(self, op: str) -> list[str]:
        if op in ("in", "not in"):
            open_tok = self.peek()
            if open_tok.kind != "lpar":
                return [self.parse_value()]
            self.take()
            values = [self.parse_value()]
            while self.peek().kind == "comma":
                self.take()
                values.append(self.parse_value())
            close = self.peek()
            if close.kind != "rpar":
                if close.kind == "eof":
                    raise JqlError(f"{_JQL_PREFIX}Expecting ')' before the end of the query.")
                raise JqlError(f"{_JQL_PREFIX}Expecting ',' or ')' but got '{close.value}'. {self.where(close)}")
            self.take()
            return values
        return [self.parse_value()]

    def parse_value(self) -> str:
        tok = self.take()
        if tok.kind == "str":
            return tok.value
        if tok.kind == "word":
            if tok.value.lower() in _RESERVED:
                raise JqlError(
                    f"{_JQL_PREFIX}Expecting either a value, list or function but got "
                    f"'{tok.value}'. You must surround '{tok.value}' in quotation marks "
                    f"to use it as a value. {self.where(tok)}"
                )
            if self.peek().kind == "lpar":
                raise JqlError(
                    f"{_JQL_PREFIX}The function '{tok.value}' is not supported by the "
                    f"sample Jira site. {self.where(tok)}"
                )
            return tok.value
        if tok.kind == "eof":
            raise JqlError(f"{_JQL_PREFIX}Expecting either a value, list or function before the end of the query.")
        raise JqlError(
            f"{_JQL_PREFIX}Expecting either a value, list or function but got '{tok.value}'. {self.where(tok)}"
        )

    def parse_order(self) -> list[tuple[str, bool]]:
        order: list[tuple[str, bool]] = []
        while True:
            tok = self.take()
            if tok.kind not in ("word", "str"):
                got = "the end of the query" if tok.kind == "eof" else f"'{tok.value}'"
                raise JqlError(f"{_JQL_PREFIX}Expecting a field name but got {got}.")
            name = tok.value.lower()
            if name not in _SORTABLE:
                raise JqlError(f"Not able to sort using field '{tok.value}'.")
            desc = False
            if self.at_word("asc", "desc"):
                desc = self.take().value.lower() == "desc"
            order.append((name, desc))
            if self.peek().kind != "comma":
                break
            self.take()
        if len(order) > 7:
            raise JqlError("The ORDER BY clause can contain a maximum of 7 fields.")
        return order

    # ---- semantics -------------------------------------------------------------------

    @staticmethod
    def check_field(name: str, field_id: str) -> None:
        supported = {"project", "key", "issuekey", "id", "issuetype", "type", "status"}
        if field_id in supported or field_id in _DATE_FIELDS or field_id == "statuscategory":
            return
        if field_id in _KNOWN_UNSUPPORTED or field_id.startswith("cf["):
            raise JqlError(f"{_JQL_PREFIX}Searching by field '{name}' is not supported by the sample Jira site.")
        raise JqlError(f"Field '{name}' does not exist or you do not have permission to view it.")

    @staticmethod
    def compile_empty(name: str, field_id: str, negate: bool) -> _Pred:
        """``field IS [NOT] EMPTY``; fields that always have a value are never empty."""
        if field_id in _NEVER_EMPTY or field_id in _DATE_FIELDS:
            return lambda issue: negate
        attr = _MAYBE_EMPTY.get(field_id)
        if attr is None:
            _Parser.check_field(name, field_id)
            raise JqlError(f"The operator 'IS' is not supported by the '{name}' field.")

        def is_empty(issue: dict[str, Any]) -> bool:
            return not issue["fields"].get(attr)

        return (lambda issue: not is_empty(issue)) if negate else is_empty

    def compile_clause(self, name: str, field_id: str, op: str, values: list[str]) -> _Pred:
        if field_id in _DATE_FIELDS:
            return self.compile_date(name, _DATE_FIELDS[field_id], op, values)
        if op not in ("=", "!=", "in", "not in"):
            raise JqlError(f"The operator '{op}' is not supported by the '{name}' field.")
        if field_id == "project":
            wanted = {self.project_id(v) for v in values}

            def get(issue: dict[str, Any]) -> str:
                return issue["fields"]["project"]["id"]
        elif field_id in ("key", "issuekey", "id"):
            wanted = {self.issue_id(v, name) for v in values}

            def get(issue: dict[str, Any]) -> str:
                return issue["id"]
        elif field_id in ("issuetype", "type"):
            wanted = self.named_ids(self.site.issue_types, values, "issuetype")

            def get(issue: dict[str, Any]) -> str:
                return issue["fields"]["issuetype"]["id"]
        elif field_id == "status":
            wanted = self.named_ids(self.site.statuses, values, "status")

            def get(issue: dict[str, Any]) -> str:
                return issue["fields"]["status"]["id"]
        else:  # statusCategory
            wanted = set()
            for value in values:
                lowered = value.lower()
                hits = {
                    key for key, (cid, _, cname) in _CATEGORY_OBJ.items() if lowered in (key, cname.lower(), str(cid))
                }
                if not hits:
                    raise JqlError(f"The value '{value}' does not exist for the field 'statusCategory'.")
                wanted |= hits

            def get(issue: dict[str, Any]) -> str:
                return issue["fields"]["status"]["statusCategory"]["key"]

        if op in ("=", "in"):
            return lambda issue: get(issue) in wanted
        return lambda issue: get(issue) not in wanted

    def project_id(self, value: str) -> str:
        lowered = value.lower()
        for project in self.site.projects:
            if lowered in (project["key"].lower(), project["id"], project["name"].lower()):
                return project["id"]
        raise JqlError(f"The value '{value}' does not exist for the field 'project'.")

    def issue_id(self, value: str, name: str) -> str:
        if value.isdigit():
            for issue in self.site.issues:
                if issue["id"] == value:
                    return value
            raise JqlError(f"An issue with key '{value}' does not exist for field '{name}'.")
        if not _ISSUE_KEY_RE.match(value):
            raise JqlError(f"The issue key '{value}' for field '{name}' is invalid.")
        upper = value.upper()
        for issue in self.site.issues:
            if issue["key"] == upper:
                return issue["id"]
        raise JqlError(f"An issue with key '{value}' does not exist for field '{name}'.")

    @staticmethod
    def named_ids(objs: list[dict[str, Any]], values: list[str], field_name: str) -> set[str]:
        wanted: set[str] = set()
        for value in values:
            lowered = value.lower()
            hits = {o["id"] for o in objs if lowered in (o["id"], o["name"].lower())}
            if not hits:
                raise JqlError(f"The value '{value}' does not exist for the field '{field_name}'.")
            wanted |= hits
        return wanted

    def compile_date(self, name: str, attr: str, op: str, values: list[str]) -> _Pred:
        if op in ("in", "not in", "~", "!~"):
            raise JqlError(f"The operator '{op}' is not supported by the '{name}' field.")
        bound = self.parse_date(values[0], name)
        upper = bound + timedelta(minutes=1)
        compare: dict[str, Callable[[datetime], bool]] = {
            ">=": lambda ts: ts >= bound,
            ">": lambda ts: ts > bound,
            "<=": lambda ts: ts <= bound,
            "<": lambda ts: ts < bound,
            "=": lambda ts: bound <= ts < upper,
            "!=": lambda ts: not (bound <= ts < upper),
        }
        check = compare[op]
        return lambda issue: check(parse_jira_timestamp(issue["fields"][attr]))

    def parse_date(self, value: str, name: str) -> datetime:
        text = value.strip()
        rel = _RELATIVE_RE.match(text)
        if rel:
            delta = timedelta()
            units = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}
            for amount, unit in _REL_PART_RE.findall(rel.group(2)):
                delta += timedelta(**{units[unit]: int(amount)})
            moment = self.now - delta if rel.group(1) == "-" else self.now + delta
            return moment.replace(second=0, microsecond=0)
        for fmt in _DATE_FORMATS:
            try:
                return datetime.strptime(text, fmt).replace(tzinfo=UTC)
            except ValueError:
                continue
        raise JqlError(
            f"Date value '{value}' for field '{name}' is invalid. Valid formats include: "
            "'yyyy/MM/dd HH:mm', 'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd', or a "
            "period format e.g. '-5d', '4w 2d'."
        )


def _sort_value(issue: dict[str, Any], name: str) -> Any:
    if name in ("updated", "updateddate"):
        return parse_jira_timestamp(issue["fields"]["updated"])
    if name in ("created", "createddate"):
        return parse_jira_timestamp(issue["fields"]["created"])
    if name in ("key", "issuekey"):
        return _key_sort(issue["key"])
    if name == "project":
        return issue["fields"]["project"]["key"]
    return int(issue["id"])


def run_jql(site: JiraSite, jql: str, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Issues of ``site`` matching ``jql``, in the query's order (raises JqlError)."""
    query = _Parser(jql, site, now or datetime.now(UTC)).parse()
    if query.where is None:
        raise JqlError("Unbounded JQL queries are not allowed here. Please add a search restriction to your query.")
    hits = [i for i in site.issues if query.where(i)]
    order = query.order or [("created", True)]
    hits.sort(key=lambda i: int(i["id"]), reverse=order[0][1])  # stable tie-break
    for name, desc in reversed(order):
        hits.sort(key=lambda i, n=name: _sort_value(i, n), reverse=desc)
    return hits


# --------------------------------------------------------------------------------------
# HTTP handler
# --------------------------------------------------------------------------------------

_JSON_HEADERS = {"content-type": "application/json;charset=UTF-8"}
_INVALID_PAYLOAD = "Invalid request payload. Refer to the REST API documentation and try again."
_SEARCH_BODY_KEYS = {
    "jql",
    "nextPageToken",
    "maxResults",
    "fields",
    "expand",
    "properties",
    "fieldsByKeys",
    "reconcileIssues",
}
_PROJECT_EXPANDS = {"description", "lead", "issueTypes", "url", "insight"}
_PROJECT_ORDER = {
    "key",
    "name",
    "category",
    "owner",
    "issueCount",
    "lastIssueUpdatedDate",
    "archivedDate",
    "deletedDate",
}
_REMOVED_SEARCH = (
    "The requested API has been removed. Please migrate to the /rest/api/3/search/jql "
    "API. A full migration guideline is available at "
    "https://developer.atlassian.com/changelog/#CHANGE-2046"
)


class _HttpError(Exception):
    def __init__(self, status: int, messages: list[str]) -> None:
        super().__init__(status, messages)
        self.status = status
        self.messages = messages


class JiraSiteHandler:
    """Serve a :class:`JiraSite` the way Jira Cloud's REST API v3 does.

    ``clock`` supplies "now" for relative JQL dates (``updated >= -5m``); it defaults
    to the real current time.
    """

    def __init__(
        self,
        site: JiraSite,
        *,
        page_size_cap: int = 100,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.site = site
        self.page_size_cap = page_size_cap
        self.clock = clock or (lambda: datetime.now(UTC))
        self._prefix = urlsplit(site.base_url).path.rstrip("/")

    # ---- entry point -----------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, str], body: bytes | None
    ) -> tuple[int, dict[str, str], bytes]:
        method = method.upper()
        with self.site._lock:
            self.site.requests.append((method, path))
            route = path
            if self._prefix and route.startswith(self._prefix + "/"):
                route = route[len(self._prefix) :]
            route = route.rstrip("/") or "/"
            try:
                status, payload = self._dispatch(method, route, query, body)
            except _HttpError as exc:
                status, payload = exc.status, {"errorMessages": exc.messages, "errors": {}}
            except JqlError as exc:
                status, payload = 400, {"errorMessages": [str(exc)], "errors": {}}
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        return status, dict(_JSON_HEADERS), data

    def _dispatch(self, method: str, route: str, query: dict[str, str], body: bytes | None) -> tuple[int, Any]:
        if re.fullmatch(r"/rest/api/(2|3|latest)/search", route):
            raise _HttpError(410, [_REMOVED_SEARCH])
        routes: dict[str, tuple[set[str], Callable[..., Any]]] = {
            "/rest/api/3/project/search": ({"GET"}, self._project_search),
            "/rest/api/3/issuetype": ({"GET"}, self._issue_types),
            "/rest/api/3/status": ({"GET"}, self._statuses),
            "/rest/api/3/search/jql": ({"GET", "POST"}, self._search_jql),
            "/rest/api/3/search/approximate-count": ({"POST"}, self._approximate_count),
            "/rest/api/3/myself": ({"GET"}, self._myself),
            "/rest/api/3/serverInfo": ({"GET"}, self._server_info),
        }
        if route in routes:
            methods, fn = routes[route]
            if method not in methods:
                raise _HttpError(405, [f"Method '{method}' is not allowed on {route}."])
            return 200, fn(method, query, body)
        match = re.fullmatch(r"/rest/api/3/(project|issue)/([^/]+)", route)
        if match and method == "GET":
            if match.group(1) == "project":
                return 200, self._project_get(match.group(2), query)
            return 200, self._issue_get(match.group(2), query)
        raise _HttpError(404, [f"No resource is available at {method} {route}."])

    # ---- projects --------------------------------------------------------------------

    def _project_view(self, project: dict[str, Any], expand: set[str]) -> dict[str, Any]:
        view = {k: v for k, v in project.items() if k not in ("description", "lead", "issueTypes", "url")}
        if "description" in expand:
            view["description"] = project.get("description", "")
        if "lead" in expand and "lead" in project:
            view["lead"] = project["lead"]
        if "issueTypes" in expand:
            view["issueTypes"] = project.get("issueTypes", [])
        if "url" in expand and project.get("url"):
            view["url"] = project["url"]
        if "insight" in expand:
            mine = [i for i in self.site.issues if i["fields"]["project"]["id"] == project["id"]]
            insight: dict[str, Any] = {"totalIssueCount": len(mine)}
            if mine:
                last = max(parse_jira_timestamp(i["fields"]["updated"]) for i in mine)
                insight["lastIssueUpdateTime"] = format_jira_timestamp(last)
            view["insight"] = insight
        return view

    def _project_search(self, method: str, query: dict[str, str], body: bytes | None) -> Any:
        start = _int_param(query, "startAt", 0, minimum=0)
        size = min(_int_param(query, "maxResults", 50, minimum=0), self.page_size_cap)
        expand = {e.strip() for e in query.get("expand", "").split(",") if e.strip()}
        order_by = query.get("orderBy", "key").strip() or "key"
        descending = order_by.startswith("-")
        order_field = order_by.lstrip("+-")
        if order_field not in _PROJECT_ORDER:
            raise _HttpError(400, [f"Invalid orderBy value: '{order_by}'."])

        projects = list(self.site.projects)
        if query.get("query"):
            needle = query["query"].lower()
            projects = [p for p in projects if needle in p["key"].lower() or needle in p["name"].lower()]
        if query.get("keys"):
            keys = {k.strip().upper() for k in query["keys"].split(",")}
            projects = [p for p in projects if p["key"] in keys]
        if query.get("id"):
            ids = {k.strip() for k in query["id"].split(",")}
            projects = [p for p in projects if p["id"] in ids]
        if query.get("typeKey"):
            types = {k.strip() for k in query["typeKey"].split(",")}
            projects = [p for p in projects if p["projectTypeKey"] in types]
        if query.get("categoryId"):
            cat = query["categoryId"]
            projects = [p for p in projects if (p.get("projectCategory") or {}).get("id") == cat]

        counts: dict[str, int] = {}
        last_update: dict[str, str] = {}
        for issue in self.site.issues:
            pid = issue["fields"]["project"]["id"]
            counts[pid] = counts.get(pid, 0) + 1
            last_update[pid] = max(last_update.get(pid, ""), issue["fields"]["updated"])
        sort_keys: dict[str, Callable[[dict[str, Any]], Any]] = {
            "key": lambda p: p["key"],
            "name": lambda p: (p["name"].strip().lower(), p["key"]),
            "category": lambda p: ((p.get("projectCategory") or {}).get("name", "~"), p["key"]),
            "owner": lambda p: (p.get("lead", {}).get("displayName", ""), p["key"]),
            "issueCount": lambda p: (counts.get(p["id"], 0), p["key"]),
            "lastIssueUpdatedDate": lambda p: (last_update.get(p["id"], ""), p["key"]),
        }
        projects.sort(key=sort_keys.get(order_field, sort_keys["key"]), reverse=descending)

        page = projects[start : start + size]
        is_last = start + len(page) >= len(projects)
        extra = [(k, v) for k, v in query.items() if k not in ("startAt", "maxResults")]
        root = f"{self.site.base_url}/rest/api/3/project/search?"

        def link(at: int) -> str:
            params = [("startAt", str(at)), ("maxResults", str(size)), *extra]
            return root + urlencode(params, safe=",")

        out: dict[str, Any] = {"self": link(start)}
        if not is_last:
            out["nextPage"] = link(start + size)
        out.update(
            maxResults=size,
            startAt=start,
            total=len(projects),
            isLast=is_last,
            values=[self._project_view(p, expand) for p in page],
        )
        return out

    def _project_get(self, id_or_key: str, query: dict[str, str]) -> Any:
        try:
            project = self.site.project(id_or_key)
        except KeyError:
            raise _HttpError(404, [f"No project could be found with key '{id_or_key}'."]) from None
        expand = {"description", "lead", "issueTypes", "url"}
        expand |= {e.strip() for e in query.get("expand", "").split(",") if e.strip()}
        return self._project_view(project, expand)

    # ---- lists -----------------------------------------------------------------------

    def _issue_types(self, method: str, query: dict[str, str], body: bytes | None) -> Any:
        return self.site.issue_types

    def _statuses(self, method: str, query: dict[str, str], body: bytes | None) -> Any:
        return self.site.statuses

    def _myself(self, method: str, query: dict[str, str], body: bytes | None) -> Any:
        if self.site.users:
            return self.site.users[0]
        return _user_obj(self.site.base_url, 0, "Sample User", "UTC", True)

    def _server_info(self, method: str, query: dict[str, str], body: bytes | None) -> Any:
        return {
            "baseUrl": self.site.base_url,
            "displayUrl": self.site.base_url,
            "version": "1001.0.0-SNAPSHOT",
            "versionNumbers": [1001, 0, 0],
            "deploymentType": "Cloud",
            "buildNumber": 100289,
            "buildDate": "2026-03-01T00:00:00.000+0000",
            "serverTime": format_jira_timestamp(self.clock()),
            "scmInfo": "0f5d6a4c1b2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a",
            "serverTitle": "Jira",
        }

    # ---- issues ----------------------------------------------------------------------

    def _issue_get(self, key_or_id: str, query: dict[str, str]) -> Any:
        try:
            issue = self.site.issue(key_or_id)
        except KeyError:
            raise _HttpError(404, ["Issue does not exist or you do not have permission to see it."]) from None
        wanted = _field_selection(_split_fields(query.get("fields")) or ["*all"])
        return _issue_view(issue, wanted)

    def _search_request(self, method: str, query: dict[str, str], body: bytes | None) -> dict[str, Any]:
        if method == "GET":
            request: dict[str, Any] = {
                "jql": query.get("jql", ""),
                "nextPageToken": query.get("nextPageToken"),
                "maxResults": query.get("maxResults"),
                "fields": _split_fields(query.get("fields")),
            }
            if request["maxResults"] is not None:
                try:
                    request["maxResults"] = int(request["maxResults"])
                except ValueError:
                    raise _HttpError(400, [f"The value '{query['maxResults']}' is not valid for maxResults."]) from None
            return request
        try:
            payload = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise _HttpError(400, [_INVALID_PAYLOAD]) from None
        if not isinstance(payload, dict) or set(payload) - _SEARCH_BODY_KEYS:
            raise _HttpError(400, [_INVALID_PAYLOAD])
        jql = payload.get("jql", "")
        token = payload.get("nextPageToken")
        size = payload.get("maxResults")
        fields = payload.get("fields")
        if (
            not isinstance(jql, str | None)
            or not isinstance(token, str | None)
            or (size is not None and (not isinstance(size, int) or isinstance(size, bool)))
        ):
            raise _HttpError(400, [_INVALID_PAYLOAD])
        if isinstance(fields, str):
            fields = _split_fields(fields)
        elif isinstance(fields, list) and all(isinstance(f, str) for f in fields):
            fields = [p for f in fields for p in _split_fields(f)]
        elif fields is not None:
            raise _HttpError(400, [_INVALID_PAYLOAD])
        return {"jql": jql or "", "nextPageToken": token, "maxResults": size, "fields": fields}

    def _search_jql(self, method: str, query: dict[str, str], body: bytes | None) -> Any:
        request = self._search_request(method, query, body)
        jql: str = request["jql"]
        fields = request["fields"] or ["id"]
        wanted = _field_selection(fields)
        offset = 0
        if request["nextPageToken"]:
            offset = _decode_token(request["nextPageToken"], jql)
        size = request["maxResults"]
        if size is None:
            size = 50
        if size < 1:
            raise _HttpError(400, ["The maxResults parameter must be greater than 0."])
        id_only = wanted is not None and not wanted
        size = min(size, 5000 if id_only else self.page_size_cap)
        hits = run_jql(self.site, jql, now=self.clock())
        page = hits[offset : offset + size]
        out: dict[str, Any] = {"issues": [_issue_view(i, wanted) for i in page]}
        if offset + len(page) < len(hits):
            out["nextPageToken"] = _encode_token(offset + len(page), jql)
            out["isLast"] = False
        else:
            out["isLast"] = True
        return out

    def _approximate_count(self, method: str, query: dict[str, str], body: bytes | None) -> Any:
        try:
            payload = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise _HttpError(400, [_INVALID_PAYLOAD]) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("jql", ""), str):
            raise _HttpError(400, [_INVALID_PAYLOAD])
        return {"count": len(run_jql(self.site, payload.get("jql", ""), now=self.clock()))}


def _int_param(query: dict[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _HttpError(400, [f"The value '{raw}' is not valid for {name}."]) from None
    if value < minimum:
        raise _HttpError(400, [f"The value '{raw}' is not valid for {name}."])
    return value


def _split_fields(raw: str | None) -> list[str]:
    if not raw:
        return []
    return [f.strip() for f in raw.split(",") if f.strip()]


def _field_selection(fields: list[str]) -> set[str] | None:
    """Field names to include; ``None`` means every field. ``id``/``key`` are always at
    the top level of an issue, so ``["id"]`` selects no field at all."""
    include_all = False
    chosen: set[str] = set()
    excluded: set[str] = set()
    for name in fields:
        if name in ("*all", "*navigable"):
            include_all = True
        elif name.startswith("-"):
            excluded.add(name[1:])
        elif name not in ("id", "key", "self"):
            chosen.add(name)
    if excluded and not include_all and not chosen:
        include_all = True  # "-description" means navigable fields minus description
    if include_all:
        return None if not excluded else {"*all", *(f"-{e}" for e in excluded)}
    return chosen - excluded


def _issue_view(issue: dict[str, Any], wanted: set[str] | None) -> dict[str, Any]:
    fields = issue["fields"]
    if wanted is None:
        chosen = dict(fields)
    elif "*all" in wanted:
        drop = {w[1:] for w in wanted if w.startswith("-")}
        chosen = {k: v for k, v in fields.items() if k not in drop}
    else:
        chosen = {k: fields[k] for k in fields if k in wanted}
    return {
        "expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
        "id": issue["id"],
        "self": issue["self"],
        "key": issue["key"],
        "fields": chosen,
    }


def _jql_digest(jql: str) -> str:
    return hashlib.sha256(" ".join(jql.split()).encode()).hexdigest()[:12]


def _encode_token(offset: int, jql: str) -> str:
    raw = json.dumps({"o": offset, "q": _jql_digest(jql)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_token(token: str, jql: str) -> int:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        offset = int(data["o"])
        same_query = data["q"] == _jql_digest(jql)
    except (ValueError, KeyError, TypeError):
        raise _HttpError(400, ["The provided next page token is invalid."]) from None
    if offset < 0 or not same_query:
        raise _HttpError(400, ["The provided next page token is invalid."])
    return offset


def sample_transport(site: JiraSite, *, page_size_cap: int = 100) -> httpx.MockTransport:
    """An httpx transport answering requests from :class:`JiraSiteHandler` over ``site``.

    Repeated query parameters (``fields=a&fields=b``) reach the handler joined by
    commas, which is how Jira treats them for the list-valued parameters.
    """
    handler = JiraSiteHandler(site, page_size_cap=page_size_cap)

    def respond(request: httpx.Request) -> httpx.Response:
        query: dict[str, str] = {}
        for name, value in request.url.params.multi_items():
            query[name] = f"{query[name]},{value}" if name in query else value
        status, headers, body = handler.handle(request.method, request.url.path, query, request.content or None)
        return httpx.Response(status, headers=headers, content=body, request=request)

    return httpx.MockTransport(respond)
