"""Who shops and what is for sale: users, products, brands, categories and listings.

Users have a home market, a sign-up time, an activity level (shopping sessions per day), a taste
vector, an affinity per category and a price-level preference. Products have a category, a brand,
a base price in US dollars, a taste vector, a popularity, a slow popularity trend and a launch time.
The taste vectors and affinities are the latent truth of the choice model in `demand.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from features.contract import LISTINGS, PRODUCTS, USERS
from features.simulator.clock import MICROS_PER_SECOND, SECONDS_PER_DAY, utc_series
from features.simulator.config import MarketplaceConfig
from features.simulator.identifiers import lookup_ids

# name, median base price in USD, nouns for product titles
CATEGORY_CATALOGUE: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("electronics", 120.0, ("Headphones", "Speaker", "Charger", "Smartwatch", "Camera", "Keyboard")),
    ("fashion", 40.0, ("Sneakers", "Jacket", "Dress", "Backpack", "Scarf", "Jeans")),
    ("home_kitchen", 45.0, ("Kettle", "Pan Set", "Lamp", "Blender", "Towel Set", "Knife Block")),
    ("beauty", 22.0, ("Serum", "Lipstick", "Shampoo", "Face Cream", "Perfume", "Hair Dryer")),
    ("toys_games", 30.0, ("Building Set", "Puzzle", "Board Game", "Plush Toy", "RC Car", "Doll")),
    (
        "sports_outdoors",
        55.0,
        ("Yoga Mat", "Tent", "Water Bottle", "Running Shorts", "Dumbbells", "Bike Light"),
    ),
    ("books_media", 16.0, ("Novel", "Cookbook", "Vinyl Record", "Comic", "Travel Guide", "Audiobook")),
    ("grocery", 12.0, ("Coffee Beans", "Green Tea", "Olive Oil", "Chocolate", "Spice Mix", "Granola")),
    ("pet_supplies", 25.0, ("Dog Bed", "Cat Tree", "Leash", "Pet Food", "Aquarium", "Chew Toy")),
    ("automotive", 40.0, ("Dash Cam", "Car Charger", "Seat Cover", "Tyre Inflator", "Wax", "Roof Box")),
    ("garden", 35.0, ("Hose", "Planter", "Pruner", "Seed Kit", "Solar Light", "Gloves")),
    ("office", 20.0, ("Notebook", "Desk Lamp", "Pen Set", "Organizer", "Monitor Stand", "Chair Mat")),
)
_BRAND_SYLLABLES = ("nor", "vik", "ta", "ma", "ro", "lu", "zen", "ka", "bel", "sol", "dri", "on", "el", "va",
                    "mi", "qu", "ar", "tis", "po", "lin", "ex", "ju", "ne", "ko")  # fmt: skip


@dataclass(frozen=True)
class Users:
    market: np.ndarray  # index into config.markets
    signup_us: np.ndarray  # sign-up time, UTC microseconds since the epoch
    active_from: np.ndarray  # first simulated day (index) the user can shop
    activity: np.ndarray  # shopping sessions per day on an ordinary day
    price_preference: np.ndarray  # utility per unit of the product's price tier (negative: thrifty)
    latent: np.ndarray  # users x latent_dim
    category_affinity: np.ndarray  # users x categories

    @property
    def count(self) -> int:
        return len(self.market)


@dataclass(frozen=True)
class Products:
    category: np.ndarray  # index into categories
    brand: np.ndarray  # index into brands
    base_price_usd: np.ndarray
    price_tier: np.ndarray  # log price standardised within the category
    popularity: np.ndarray  # utility offset shared by all users
    trend: np.ndarray  # utility change per year
    created_us: np.ndarray  # listing time, UTC microseconds since the epoch
    live_from: np.ndarray  # first simulated day (index) the product can sell
    latent: np.ndarray  # products x latent_dim
    titles: list[str]

    @property
    def count(self) -> int:
        return len(self.category)


@dataclass(frozen=True)
class Catalogue:
    categories: list[str]
    brands: list[str]
    products: Products
    listed: np.ndarray  # products x markets, bool


def user_ids(indices: np.ndarray) -> pl.Series:
    """user_id of 0-based user indices (U00000001 is index 0)."""
    return lookup_ids("U", indices, "user_id")


def product_ids(indices: np.ndarray) -> pl.Series:
    """product_id of 0-based product indices (P0000001 is index 0)."""
    return lookup_ids("P", indices, "product_id")


def _arrival_micros(start: date, arrival_days: np.ndarray) -> np.ndarray:
    """UTC microseconds of fractional days since the start, to whole seconds."""
    start_us = int(np.datetime64(start, "us").astype(np.int64))
    return start_us + np.floor(arrival_days * SECONDS_PER_DAY).astype(np.int64) * MICROS_PER_SECOND


def _split_by_shares(total: int, shares: np.ndarray) -> np.ndarray:
    """Counts per share summing to total, each at least one (largest remainder)."""
    exact = shares / shares.sum() * total
    counts = np.maximum(np.floor(exact).astype(int), 1)
    while counts.sum() < total:
        counts[np.argmax(exact - counts)] += 1
    while counts.sum() > total and counts.max() > 1:
        counts[np.argmax(counts - exact)] -= 1
    return counts


def _arrival_days(
    n: int, before_start: float, history_years: float, n_days: int, rng: np.random.Generator
) -> np.ndarray:
    """Fractional days since the simulation start: a share before it (history), the rest during it."""
    existing = rng.random(n) < before_start
    history_days = history_years * 365.25
    return np.where(existing, -rng.random(n) * history_days, rng.random(n) * (n_days - 1))


def make_users(config: MarketplaceConfig, n_users: int, n_days: int, rng: np.random.Generator) -> Users:
    population, choice = config.population, config.choice
    shares = np.array([market.user_share for market in config.markets])
    n_users = max(n_users, len(shares))
    market = rng.permutation(np.repeat(np.arange(len(shares)), _split_by_shares(n_users, shares)))
    arrival = _arrival_days(n_users, population.users_before_start, population.history_years, n_days, rng)
    signup_us = _arrival_micros(config.start_date, arrival)
    # two days' margin: a session on the local day after sign-up never precedes the UTC sign-up time
    active_from = np.maximum(np.floor(arrival).astype(int) + 2, 0)
    sigma = population.activity_sigma
    activity = population.sessions_per_user_day * rng.lognormal(-(sigma**2) / 2, sigma, n_users)
    latent_dim = population.latent_dim
    # scaled so that a user-product dot product has standard deviation latent_scale
    scale = np.sqrt(choice.latent_scale) / latent_dim**0.25
    return Users(
        market=market,
        signup_us=signup_us,
        active_from=active_from,
        activity=activity,
        price_preference=rng.normal(choice.price_preference_mean, choice.price_preference_sd, n_users),
        latent=rng.standard_normal((n_users, latent_dim)) * scale,
        category_affinity=rng.normal(0.0, choice.category_affinity_scale, (n_users, population.categories)),
    )


def _brand_names(n: int, rng: np.random.Generator) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        syllables = rng.choice(_BRAND_SYLLABLES, size=rng.integers(2, 4))
        name = "".join(syllables).capitalize()
        if name in seen:
            name = f"{name} {len(names)}"
        seen.add(name)
        names.append(name)
    return names


def make_catalogue(
    config: MarketplaceConfig, n_products: int, n_brands: int, n_days: int, rng: np.random.Generator
) -> Catalogue:
    population, choice = config.population, config.choice
    n_categories = population.categories
    categories = [CATEGORY_CATALOGUE[index][0] for index in range(n_categories)]
    brands = _brand_names(n_brands, rng)
    brand_category = rng.permutation(np.arange(n_brands) % n_categories)
    brand_quality = rng.normal(0.0, 0.3, n_brands)
    brand_premium = rng.normal(0.0, 0.25, n_brands)

    category = rng.choice(n_categories, size=n_products, p=_normalised(rng.uniform(0.5, 1.5, n_categories)))
    brand = np.empty(n_products, dtype=int)
    for index in range(n_categories):
        makers = np.flatnonzero(brand_category == index)
        if len(makers) == 0:  # fewer brands than categories: any brand will do
            makers = np.arange(n_brands)
        members = np.flatnonzero(category == index)
        brand[members] = rng.choice(makers, size=len(members))

    median_price = np.array([CATEGORY_CATALOGUE[index][1] for index in range(n_categories)])
    log_price = np.log(median_price[category]) + brand_premium[brand]
    log_price += rng.normal(0.0, population.price_sigma, n_products)
    base_price = np.maximum(np.round(np.exp(log_price), 2), 0.99)
    price_tier = np.zeros(n_products)
    for index in range(n_categories):
        members = category == index
        if members.sum() < 2:  # a lone product is its category's middle price
            continue
        values = np.log(base_price[members])
        price_tier[members] = (values - values.mean()) / max(values.std(), 1e-9)

    arrival = _arrival_days(
        n_products, population.products_before_start, population.history_years, n_days, rng
    )
    created_us = _arrival_micros(config.start_date, arrival)
    scale = np.sqrt(choice.latent_scale) / population.latent_dim**0.25
    products = Products(
        category=category,
        brand=brand,
        base_price_usd=base_price,
        price_tier=price_tier,
        popularity=brand_quality[brand] + rng.normal(0.0, choice.popularity_sd, n_products),
        trend=rng.normal(0.0, choice.product_trend_sd, n_products),
        created_us=created_us,
        live_from=np.maximum(np.floor(arrival).astype(int) + 2, 0),
        latent=rng.standard_normal((n_products, population.latent_dim)) * scale,
        titles=_titles(category, brand, brands, rng),
    )
    listing_share = np.array([market.listing_share for market in config.markets])
    listed = rng.random((n_products, len(listing_share))) < listing_share[None, :]
    for market in np.flatnonzero(~listed.any(axis=0)):  # every market sells something
        listed[np.argmax(products.popularity), market] = True
    return Catalogue(categories, brands, products, listed)


def _normalised(weights: np.ndarray) -> np.ndarray:
    return weights / weights.sum()


def _titles(
    category: np.ndarray, brand: np.ndarray, brands: list[str], rng: np.random.Generator
) -> list[str]:
    noun_choice = rng.integers(0, 6, len(category))
    model = rng.integers(100, 1000, len(category))
    letters = rng.choice(list("ACEHKLMNRSTVXZ"), len(category))
    return [
        f"{brands[b]} {CATEGORY_CATALOGUE[c][2][n]} {letter}{m}"
        for b, c, n, letter, m in zip(brand, category, noun_choice, letters, model, strict=True)
    ]


# ---------------------------------------------------------------------------------------------
# contract tables


def users_frame(config: MarketplaceConfig, users: Users) -> pl.DataFrame:
    market_ids = pl.Series([market.market_id for market in config.markets])
    return pl.DataFrame(
        {
            "user_id": user_ids(np.arange(users.count)),
            "market_id": market_ids.gather(users.market),
            "signup_ts": utc_series("signup_ts", users.signup_us),
        },
        schema=USERS.polars_schema,
    )


def products_frame(catalogue: Catalogue) -> pl.DataFrame:
    products = catalogue.products
    return pl.DataFrame(
        {
            "product_id": product_ids(np.arange(products.count)),
            "title": products.titles,
            "category": pl.Series(catalogue.categories).gather(products.category),
            "brand": pl.Series(catalogue.brands).gather(products.brand),
            "price": products.base_price_usd,
            "currency": ["USD"] * products.count,
            "created_ts": utc_series("created_ts", products.created_us),
        },
        schema=PRODUCTS.polars_schema,
    )


def listings_frame(config: MarketplaceConfig, listed: np.ndarray, list_price: np.ndarray) -> pl.DataFrame:
    """One row per listed product x market; `list_price` (products x markets) is the current local price."""
    product, market = np.nonzero(listed)
    return pl.DataFrame(
        {
            "product_id": product_ids(product),
            "market_id": pl.Series([m.market_id for m in config.markets]).gather(market),
            "price": list_price[product, market],
            "currency": pl.Series([m.currency for m in config.markets]).gather(market),
        },
        schema=LISTINGS.polars_schema,
    )
